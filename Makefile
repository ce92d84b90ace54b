# hsmbroker build. `make run` starts the embedded single-node default;
# `make test` runs the whole suite against real SoftHSMv2 tokens.
SHELL := /bin/bash
GO ?= go
BIN := bin
DATA_DIR ?= $(CURDIR)/.hsmbroker-dev
GOBIN := $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)
FUZZTIME ?= 5s
LONG_FUZZTIME ?= 2m
# Debian package -> a file it installs, used by `make deps` to find what is missing.
SYSTEM_DEPS := softhsm2:/usr/lib/softhsm/libsofthsm2.so opensc:/usr/bin/pkcs11-tool awscli:/usr/bin/aws openssl:/usr/bin/openssl

.PHONY: all build run test test-short fuzz soak bench lint fmt vet generate deps tools clean bench-peer

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

run: deps build
	./$(BIN)/hsmbrokerd dev --data-dir $(DATA_DIR)

# The whole suite: unit, HSM, cluster and end-to-end tests with the race
# detector, then a short run of every fuzz target.
test: deps
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME)

test-short:
	$(GO) test -short -count=1 ./...

# Every Fuzz target in every package, FUZZTIME each.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  list=$$($(GO) test -list '^Fuzz' $$pkg) || { echo "$$list"; exit 1; }; \
	  for f in $$(echo "$$list" | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 200x $$pkg; \
	  done; \
	done

fuzz-long:
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(LONG_FUZZTIME)

# Longer chaos and soak variants of the cluster tests (HSMBROKER_SOAK=1
# makes them run longer: 60 leader kills instead of 20, and so on), with
# their measurements printed.
soak: deps
	set -o pipefail; HSMBROKER_SOAK=1 $(GO) test -count=1 -timeout 90m -v -run 'LeaderKilled|Partitioned|HSMFailure|FiveNodes|Rejoin|Backup|Soak|Chaos|Failover|Scale|Drill' ./... 2>&1 | grep -E '^(=== RUN|--- |ok|FAIL|PASS)|_test.go'

bench: deps
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./broker/...

# The AWS endpoint against nsmithuk/local-kms (a software-only KMS emulator),
# same aws-sdk-go-v2 load, alternating windows (docs/BENCHMARKS.md).
# PEERBENCH_FLAGS: e.g. --duration 10s --ops encrypt,sign-rsa
LOCAL_KMS_VERSION := v0.0.0-20260228092603-2a5e92d09ab6
bench-peer: deps build
	GOBIN=$(CURDIR)/$(BIN) $(GO) install github.com/nsmithuk/local-kms@$(LOCAL_KMS_VERSION)
	./$(BIN)/hsmpeerbench --local-kms $(BIN)/local-kms --hsmbrokerd $(BIN)/hsmbrokerd $(PEERBENCH_FLAGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

lint: tools vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)
	staticcheck ./...
	cd proto && buf lint

generate: tools
	cd proto && buf generate

tools:
	@command -v buf >/dev/null || $(GO) install github.com/bufbuild/buf/cmd/buf@v1.75.0
	@command -v protoc-gen-go >/dev/null || $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	@command -v protoc-gen-go-grpc >/dev/null || $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
	@command -v staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@latest

# Installs missing system packages when run as root; otherwise says what to install.
deps:
	@missing=""; for d in $(SYSTEM_DEPS); do \
	  pkg=$${d%%:*}; file=$${d#*:}; [ -e "$$file" ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing"; \
	    echo "install them with: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

clean:
	rm -rf $(BIN)
