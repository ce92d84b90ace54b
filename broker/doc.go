// Package broker implements hsmbroker's services: the gRPC KeyService,
// CryptoService and ClusterService over one HSM partition (broker/hsm) and
// the replicated state (cluster), with the interceptors that authenticate,
// log and count every request, and the one place (toStatus) where errors
// become gRPC status codes.
//
// The Service methods are the core: they take and return the protobuf
// messages, and return Go errors (*Error, or sentinels of keys,
// broker/hsm and cluster). The gRPC server wraps them with toStatus; the
// AWS KMS front calls the same methods and maps the same errors to AWS
// exception names.
//
// Reads are served from this node's copy of the replicated state; every
// write goes through Raft and is acknowledged only after it is committed.
// Cryptographic requests use this node's own HSM partition.
package broker
