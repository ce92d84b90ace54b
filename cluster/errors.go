package cluster

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of them; test
// with errors.Is. The first four are the outcomes of a command that reached
// the FSM and was rejected: the log still advanced, and every node rejected
// it the same way.
var (
	// ErrNotFound: the key, alias, node or join token named by a command
	// does not exist.
	ErrNotFound = errors.New("cluster: not found")

	// ErrAlreadyExists: the object a command creates already exists, or a
	// key version number is already taken.
	ErrAlreadyExists = errors.New("cluster: already exists")

	// ErrInvalidState: the command is well formed but the object is in the
	// wrong state for it (enabling a key pending deletion, scheduling the
	// deletion of a key already pending, consuming an expired join token).
	ErrInvalidState = errors.New("cluster: invalid state")

	// ErrInvalidCommand: the entry is not a valid command (unknown type
	// byte, malformed JSON, missing or out-of-range fields) or asks for
	// something that can never be done to these objects (an alias moved to a
	// key of another type or usage, rotation of an asymmetric key).
	ErrInvalidCommand = errors.New("cluster: invalid command")

	// ErrPeerIdentity: a Raft address answered as another node than the
	// one it was given for (Node.ProbePeer).
	ErrPeerIdentity = errors.New("cluster: raft address answers as another node")

	// ErrNotLeader: the operation needs the leader and this node is not it.
	// The error is a *NotLeaderError naming the leader when one is known.
	ErrNotLeader = errors.New("cluster: not the leader")

	// ErrLeadershipLost: this node lost leadership while a command was in
	// flight. The command may or may not have been committed; re-read before
	// retrying anything that is not idempotent.
	ErrLeadershipLost = errors.New("cluster: leadership lost while applying, outcome unknown")

	// ErrShutdown: the node has been shut down.
	ErrShutdown = errors.New("cluster: node is shut down")
)

// NotLeaderError is returned by leader-only operations on a follower or
// candidate. LeaderID and LeaderAddr (the leader's raft address) are empty
// when no leader is known, e.g. during an election.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return ErrNotLeader.Error() + " (no known leader)"
	}
	return fmt.Sprintf("%s (leader is %s at %s)", ErrNotLeader, e.LeaderID, e.LeaderAddr)
}

// Unwrap makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

func notFound(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrNotFound}, args...)...)
}

func alreadyExists(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrAlreadyExists}, args...)...)
}

func invalidState(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidState}, args...)...)
}

func invalidCommand(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidCommand}, args...)...)
}
