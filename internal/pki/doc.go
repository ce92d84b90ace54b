// Package pki is the small certificate authority behind hsmbroker's mutual
// TLS: a cluster CA (ECDSA P-256) that issues node certificates, used both
// to serve gRPC and to authenticate Raft peers, and client certificates that
// name a principal and a role.
//
// # Identities
//
// A client certificate carries the principal in the subject common name and
// its role (an authz.Role: admin, user or auditor) in the subject
// organizational unit. It has no URI SAN, so broker.PrincipalFromCert,
// which prefers a URI SAN and falls back to the common name, reads the
// principal from the CN. Node
// certificates are valid for both server and client authentication because
// a Raft node is a server to some peers and a client of others.
//
// # Files
//
// Certificates are PEM "CERTIFICATE" blocks, keys PKCS#8 "PRIVATE KEY"
// blocks. Key and certificate files are written 0600 (everything under a
// node's data directory is private to its user; a trust bundle meant for
// others is written with an explicit mode), each through a temporary file
// and a rename so that a crash never leaves half a file. Private keys that
// group or others can access are refused when loaded
// (config.CheckPrivateFile).
package pki
