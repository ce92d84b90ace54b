// Package hsmbrokerv1 is the Go code generated from the hsmbroker v1 gRPC API
// (package hsmbroker.v1): the KeyService, CryptoService and ClusterService
// clients and servers and their messages. The .proto files beside it are the
// reference; key.proto explains how keys are named and how errors are
// reported. Regenerate with `make generate`.
package hsmbrokerv1
