// Package audit writes and verifies hsmbroker's tamper-evident audit log.
//
// The log is a file of JSON lines, one Record per request a node answers,
// allowed or denied. Each line carries two SHA-256 hashes in lower-case
// hex: "prev", the hash of the line before it (64 zeros on the first line
// of a chain), and, last, "hash", the hash of the line itself. The hash
// covers the line's bytes up to and including the "prev" member, closed
// with "}":
//
//	{"seq":7,...,"prev":"<hash of line 6>","hash":"<sha256 of {"seq":7,...,"prev":"..."}>"}
//
// Changing any byte of a line breaks its own hash; recomputing that hash
// breaks the next line's prev; so an edit is found at the line it touched
// unless every later line is rewritten too. Removing lines from the end
// cannot be seen from the file alone: ship the lines (or just the latest
// hash) somewhere the broker's host cannot rewrite to anchor the chain.
// Verify checks a file and names the first line that breaks the chain.
//
// Log appends lines. It is safe for concurrent use; lines are chained in
// the order Append is called and written in that order on a file opened
// O_APPEND. Concurrent Appends share writes (group commit): the lines
// that arrive while one write is under way go out together in the next,
// with one write(2), and one fsync if any of them asked for it; each
// Append returns only once its own line is written (and synced, when it
// asked). A failed write fails every line it carried and those chained
// behind them, and is cut back off the file so that the next line
// continues an unbroken chain. Whether the caller may go on when a line
// cannot be written is the caller's decision: the broker fails the
// request (see docs/SECURITY.md).
package audit
