// Package awskms serves hsmbroker's keys over the AWS KMS JSON protocol
// (TrentService), so that the AWS CLI, every AWS SDK and the tools built
// on them work against the broker with only an endpoint override, and over
// the AWS KMS external key store (XKS) proxy API, so that AWS KMS itself
// can use the cluster as an external key store.
//
// A Handler (New) is an http.Handler. TrentService requests are POST /
// with an X-Amz-Target of "TrentService.<Operation>" and an
// application/x-amz-json-1.1 body; answers use AWS's member names, base64
// blobs and epoch-second timestamps, and errors are
// {"__type": "<Exception>", "message": ...} with AWS's exception names.
// Every request carries an x-amzn-RequestId header in its answer.
//
// Every request is authenticated with AWS Signature Version 4, verified
// here (sigv4.go) against Credentials: an access key stands for a
// principal, which the operations see through broker.WithPrincipal just as
// gRPC requests carry the principal of their client certificate.
//
// The operations are thin adapters over broker.Service, the same core the
// gRPC API uses; errors of the core are named with broker.Classify, the
// one mapping of core errors to AWS exception names. Where AWS's semantics
// differ from the gRPC API's, this package follows AWS: CreateKey needs no
// alias, management operations take a key id or key ARN but not an alias,
// Verify and VerifyMac answer a mismatch with KMSInvalidSignatureException
// and KMSInvalidMacException, and ScheduleKeyDeletion, CancelKeyDeletion
// and the cryptographic operations return key ARNs.
//
// A request body is decoded once, strictly (decode.go), into the
// operation's typed request; authorization, the audit line and the
// operation all read that one value.
//
// What a client can hold of the endpoint before it is authenticated is
// bounded at three levels: connections and time by the daemon's server
// (internal/netlimit: at most 1024 connections at once, headers within
// 5 s, the request within 30 s, the answer within 60 s, idle keep-alives
// for 2 minutes), and memory by the Handler, which checks a request's
// Authorization header (form, known access key, signing time, signed
// headers) before reading its body, and holds at most
// Config.MaxInFlightBodyBytes of bodies across all requests, a quarter of
// it for the requests of one source address, counting what each body has
// received (bodyBudget); a request that would exceed either is answered
// with ThrottlingException without more of its body being read.
//
// A Handler is safe for concurrent use; between requests it keeps only
// its configuration, derived signing keys and the count of body bytes in
// flight, per source address.
package awskms
