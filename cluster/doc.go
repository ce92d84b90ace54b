// Package cluster replicates hsmbroker's state across brokers with Raft
// (hashicorp/raft) and runs the Raft node.
//
// # State
//
// The replicated state (Data) is key metadata, key versions, aliases,
// policies, grants, the roles of principals, member records with their HSM
// partition metadata, join-token hashes and the id of the cluster's domain
// key. It never holds key
// material: a key version carries its key wrapped under the domain key
// inside an HSM, and, for asymmetric keys, the public key.
//
// # Commands
//
// Every change is a Command, and every log entry is one encoded command:
// a type byte (CommandType) followed by the command's JSON body. The type
// byte selects the Go type through a dispatch table; unknown types, unknown
// JSON fields and trailing bytes are refused. Commands carry every time they
// need (the proposer's clock), so applying one is deterministic: each node
// reaches the same state and the same verdict.
//
// Apply never panics on bad input. A malformed entry or a failed
// precondition becomes an error value in the apply response (ErrNotFound,
// ErrAlreadyExists, ErrInvalidState, ErrInvalidCommand); the log advances
// and the state is left exactly as it was. Preconditions follow AWS KMS: no
// management operation on a key pending deletion, aliases only to usable
// keys of the same type and usage, versions numbered in sequence, deletion
// only after the waiting period.
//
// # Concurrency
//
// Raft calls the FSM's Apply, ApplyBatch, Snapshot and Restore from a single
// goroutine. The State behind it is guarded by a sync.RWMutex: Apply and
// Restore take the write lock, and every State read method takes the read
// lock and returns deep copies, so reads are safe from any goroutine at any
// time and what they return belongs to the caller. A single read is
// consistent; two reads may see different states if a command is applied
// in between. Restore decodes a snapshot into a fresh Data before it swaps
// it in, so readers see the old state or the new one, never a mixture.
// Snapshots copy the state under the read lock and are encoded while Apply
// goes on.
//
// Reads are local. A follower's State may lag the leader by the replication
// delay; on the leader, State read after Barrier is linearizable.
//
// # Node
//
// A Node owns the raft instance, its bbolt log and stable store, file
// snapshots and the transport (mutual TLS 1.3 in production). Writes
// (Node.Apply) are accepted only by the leader and acknowledged only after
// they are committed and applied locally; a follower returns a
// *NotLeaderError naming the leader so that the caller can forward the
// encoded command (Node.ApplyRaw). The leader also runs the deletion
// reaper, which deletes keys whose waiting period has ended.
package cluster
