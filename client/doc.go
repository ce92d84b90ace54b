// Package client is the Go SDK for hsmbroker: a gRPC client for a cluster
// of brokers, and envelope encryption of files of any size.
//
// # Connecting
//
// Dial takes a Config (ConfigFromEnv reads the HSMBROKER_* variables that
// `hsmbrokerd dev` writes to <data-dir>/dev.env) and makes one connection per
// endpoint, authenticated with mutual TLS 1.3. The Client's Keys, Crypto and
// Cluster fields are the generated service clients of
// github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1; their comments are the
// API reference.
//
//	c, err := client.Dial(ctx, client.ConfigFromEnv())
//	if err != nil { ... }
//	defer c.Close()
//	md, err := c.Keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: "alias/payments"})
//
// # Endpoints, deadlines and retries
//
// Every call goes through one routing layer that:
//
//   - gives each attempt its own deadline, Config.Timeout, within any
//     deadline of the caller's context;
//   - attaches a request id (gRPC metadata RequestIDHeader, kept across
//     retries; WithRequestID sets one), which the broker writes to its
//     audit log; RequestID(err) returns it for a failed call;
//   - sends the call to the endpoint that last answered, unless it has
//     failed recently or its connection is in TRANSIENT_FAILURE, in which
//     case the next healthy endpoint in configuration order is used;
//   - on a failure that blames the endpoint rather than the request, marks
//     the endpoint down for a while (0.5 s, doubling with each consecutive
//     failure, at most 30 s) and may retry on the next endpoint after a
//     jittered backoff (up to 50 ms, doubling, at most 2 s), up to
//     Config.Retries times.
//
// The failures that blame the endpoint are codes.Unavailable (unreachable,
// no Raft leader, HSM down), codes.DeadlineExceeded (no answer in time),
// codes.ResourceExhausted with ThrottlingException (HSM saturated), and
// codes.FailedPrecondition that the broker marks as not carried out (a
// node removed from the cluster refusing a cluster change; see
// NotCarriedOut).
//
// Which of them are retried depends on whether the call is idempotent
// (Idempotent reports it):
//
//   - Idempotent calls (reads, Encrypt, Decrypt, ReEncrypt, Sign, Verify,
//     GenerateMac, VerifyMac, GenerateRandom, GetPublicKey, RawEncrypt,
//     RawDecrypt, ListDataObjects, and the writes
//     that converge when repeated: UpdateKeyDescription, EnableKey,
//     DisableKey, TagKey, UntagKey, UpdateAlias) are retried after any of
//     them.
//   - Every other call (CreateKey, RotateKey, CreateAlias, the
//     GenerateDataKey family, ScheduleKeyDeletion, CancelKeyDeletion,
//     DeleteAlias, the cluster changes, and any RPC added later) is retried
//     only after codes.Unavailable raised before the request was sent (no
//     connection could take it), or after a failure the broker marked as
//     not carried out (NotCarriedOut: it refused the request before doing
//     anything for it, because it is not ready, has no leader to pass a
//     write to, cannot reach it, or was removed): either way no broker can
//     have carried it out. Any other failure may hide a request the broker completed (a timeout
//     after the write committed), so it is returned to the caller, who
//     knows whether a repeat is safe: a CreateKey that timed out may have
//     made the key, and DescribeKey on its alias tells.
//
// ClusterService.Backup is a server stream, retried like an idempotent call
// but only until its first message arrives: each attempt must deliver one
// within Config.Timeout, and once one has arrived a failure ends the call
// (a deadline on the caller's context, if any, bounds the whole stream).
// Client.Backup writes the snapshot to an io.Writer as it arrives and
// checks its size and SHA-256 against the stream's last message.
//
// A cancelled caller context stops the call at once. After the last
// attempt, the error of that attempt is returned: a gRPC status error whose
// code Code returns and whose AWS KMS exception name (the ErrorInfo reason,
// such as "NotFoundException") AWSException returns.
//
// # Envelope encryption
//
// EncryptStream and DecryptStream (or Envelope, for a DataKeyService other
// than a Client, a chunk size, or a required encryption context) encrypt
// streams of any length in bounded memory: GenerateDataKey (AES_256) under
// a KMS key with the caller's encryption context, then AES-256-GCM over
// 64 KiB chunks in the STREAM construction, so that truncation, extension,
// reordering and any change to the header or a chunk are detected. Decrypt
// writes each chunk only after it authenticates. The plaintext data key is
// erased from memory on every path once the cipher is made.
//
// The file format, byte by byte (docs/FILE_FORMAT.md has the rationale),
// all integers big-endian:
//
//	header:
//	  8 bytes    magic "HSMBENV1"
//	  uint16     header version, 1
//	  uint32     number of encryption context pairs N, 0 to 64
//	  N times, in strictly increasing byte order of key:
//	    uint32   key length, then the key (1 or more bytes of UTF-8)
//	    uint32   value length, then the value (UTF-8, may be empty)
//	  uint16     length L of the encrypted data key, 1 to 6144
//	  L bytes    the data key's KMS ciphertext blob (from GenerateDataKey)
//	  uint32     chunk size C, plaintext bytes per chunk, 1 to 16 MiB
//	             (65536 when written by this package)
//	  7 bytes    nonce prefix P, random
//	chunks 0, 1, ..., n-1 (n >= 1), each
//	  AES-256-GCM(data key, nonce_i, plaintext_i, AAD = the whole header)
//	  = len(plaintext_i) bytes of ciphertext followed by a 16-byte tag,
//	  where nonce_i = P || uint32 i || 1 byte: 1 if i = n-1, else 0.
//	  Every chunk but the last holds exactly C plaintext bytes; the last
//	  holds 1 to C, or 0 for an empty input. Nothing follows it.
//
// The encryption context (at most 8192 bytes encoded, like the broker's) is
// stored in the clear and is not secret; Decrypt passes it to the KMS with
// the data key's blob.
package client
