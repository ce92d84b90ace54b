# hsmbroker build. `make run` starts the embedded single-node default;
# `make test` runs the whole suite against real SoftHSMv2 tokens.
SHELL := /bin/bash
GO ?= go
BIN := bin
DATA_DIR ?= $(CURDIR)/.hsmbroker-dev
GOBIN := $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)
# Fuzz budgets are counts of executions, not durations: Go 1.26's fuzz
# coordinator can fail a target with a bare "context deadline exceeded"
# when a -fuzztime duration ends while a worker is mid-call (go.dev/issue/75804,
# fixed in Go 1.27); a count has no deadline to race. 20000x takes up to
# about 30 s for the slowest targets here (the AWS request decoders, some
# 700 executions a second) and under a second for the fastest.
FUZZTIME ?= 20000x
LONG_FUZZTIME ?= 1000000x
# Debian package -> a file it installs, used by `make deps` to find what is
# missing. RUN_DEPS is what `make run` needs; the rest are the clients the
# suite drives (a database, KMIP and PKCS#11 consumers).
RUN_DEPS := softhsm2:/usr/lib/softhsm/libsofthsm2.so openssl:/usr/bin/openssl
# pkcs11.h, for `make build`'s libhsmbroker-pkcs11.so.
RUN_DEPS += libp11-kit-dev:/usr/include/p11-kit-1/p11-kit/pkcs11.h
SYSTEM_DEPS := $(RUN_DEPS) opensc:/usr/bin/pkcs11-tool awscli:/usr/bin/aws
SYSTEM_DEPS += mariadb-server:/usr/bin/mariadbd-safe
SYSTEM_DEPS += mariadb-plugin-hashicorp-key-management:/usr/lib/mysql/plugin/hashicorp_key_management.so
SYSTEM_DEPS += python3-pykmip:/usr/bin/pykmip-server
SYSTEM_DEPS += libengine-pkcs11-openssl:/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so
# Go programs the build, lint and the suite run, each pinned to a version:
# `make tools` installs any that is missing or at another version.
GO_TOOLS := github.com/bufbuild/buf/cmd/buf@v1.75.0
GO_TOOLS += google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
GO_TOOLS += google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
GO_TOOLS += honnef.co/go/tools/cmd/staticcheck@v0.8.2
GO_TOOLS += github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
# The software-only KMS emulator the AWS endpoint is compared with (make
# bench-peer, internal/peerbench); it tags no releases, hence the pseudo-version.
GO_TOOLS += github.com/nsmithuk/local-kms@v0.0.0-20260228092603-2a5e92d09ab6

.PHONY: all build run test test-short fuzz soak bench lint fmt vet generate deps run-deps tools clean bench-peer

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...
	$(GO) build -buildmode=c-shared -o $(BIN)/libhsmbroker-pkcs11.so ./pkcs11lib && rm -f $(BIN)/libhsmbroker-pkcs11.h

run: run-deps build
	./$(BIN)/hsmbrokerd dev --data-dir $(DATA_DIR)

# The whole suite: unit, HSM, cluster and end-to-end tests with the race
# detector, then a short run of every fuzz target. Every program a test runs
# comes from `make deps` (system packages) or `make tools` (Go programs).
test: deps tools
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

# Every Go benchmark docs/BENCHMARKS.md cites, each with the docs' command
# (internal/buildcheck checks that the two agree), and the `openssl speed`
# runs the token's share of a call is compared with. LoadedKeyMemory runs
# each kind in a process of its own. The last line is the PKCS#11 library
# against hsmctl bench, each in its own process against hsmbrokerd dev (a
# test that runs only with HSMBROKER_BENCH=1; docs/PKCS11.md).
bench: deps
	$(GO) test -run '^$$' -bench Paired -benchtime 3s ./broker/hsm
	openssl speed -seconds 3 ecdsap256
	openssl speed -seconds 2 -bytes 32 -evp aes-256-gcm
	$(GO) test -run '^$$' -bench LoadAESKey ./broker/hsm
	$(GO) test -run '^$$' -bench LoadedKeyMemory/AES-256 -benchtime 1x ./broker/hsm
	$(GO) test -run '^$$' -bench LoadedKeyMemory/P-256 -benchtime 1x ./broker/hsm
	$(GO) test -run '^$$' -bench ServiceVsPartition -benchtime 2x ./broker
	$(GO) test -run '^$$' -bench Encrypt ./broker/awskms
	$(GO) test -run '^$$' -bench VerifySigV4 -benchmem ./broker/awskms
	$(GO) test -run '^$$' -bench Check -benchtime 2000x ./internal/strictjson
	$(GO) test -run '^$$' -bench CreateKey -benchtime 1x ./broker
	$(GO) test -run '^$$' -bench SnapshotEncode -benchtime 5x ./cluster
	$(GO) test -run '^$$' -bench KeysPageFull -benchtime 20x ./cluster
	$(GO) test -run '^$$' -bench KMIPLocateFull -benchtime 20x ./cluster
	$(GO) test -run '^$$' -bench TDERead -benchtime 2000x ./broker/vault
	$(GO) test -run '^$$' -bench KMIP -benchtime 2000x ./broker/kmip
	$(GO) test -run '^$$' -bench 'Append|Encode' -benchtime 2x ./broker/audit
	HSMBROKER_BENCH=1 $(GO) test -count=1 -timeout 30m -run TestBenchLibraryVsGRPC -v ./pkcs11lib/e2e

# The AWS endpoint against nsmithuk/local-kms (a software-only KMS emulator),
# same aws-sdk-go-v2 load, alternating windows (docs/BENCHMARKS.md).
# PEERBENCH_FLAGS: e.g. --duration 10s --ops encrypt,sign-rsa
bench-peer: deps tools build
	./$(BIN)/hsmpeerbench --local-kms $(GOBIN)/local-kms --hsmbrokerd $(BIN)/hsmbrokerd $(PEERBENCH_FLAGS)

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

# Installs into $(GOBIN) each GO_TOOLS program that is missing there or was
# built from another version of its module.
tools:
	@set -e; for t in $(GO_TOOLS); do \
	  pkg=$${t%@*}; want=$${t##*@}; bin=$(GOBIN)/$${pkg##*/}; \
	  have=$$($(GO) version -m $$bin 2>/dev/null | awk '$$1 == "mod" { print $$3 }'); \
	  if [ "$$have" != "$$want" ]; then \
	    echo "go install $$t"; GOBIN=$(GOBIN) $(GO) install $$t; \
	  fi; \
	done

# Installs missing system packages when run as root; otherwise says what to
# install. `make run` needs only RUN_DEPS.
deps: DEPS = $(SYSTEM_DEPS)
run-deps: DEPS = $(RUN_DEPS)
deps run-deps:
	@missing=""; for d in $(DEPS); do \
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
