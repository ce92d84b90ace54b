// Command hsmpeerbench compares the broker's AWS KMS endpoint with
// nsmithuk/local-kms under the same aws-sdk-go-v2 load (`make bench-peer`).
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/hsmbroker/hsmbroker/internal/peerbench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := peerbench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
