package drill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
)

// Placeholders of command templates.
const (
	PlaceholderNode = "{node}" // the node's id, e.g. node2
	PlaceholderNum  = "{n}"    // the number the id ends with, e.g. 2
	PlaceholderAddr = "{addr}" // the node's gRPC address, host:port
)

var (
	idPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	addrPattern = regexp.MustCompile(`^[A-Za-z0-9.:\[\]-]+$`)
	numPattern  = regexp.MustCompile(`[0-9]+$`)
)

// Command returns an Action that runs an operator's command template with
// sh -c, after substituting the node for the placeholders {node}, {n} and
// {addr}. Only node ids and addresses made of letters, digits and . _ - :
// [ ] are substituted, so that a member's name cannot inject shell syntax.
// The command's output goes to out (when not nil); a command that fails
// reports its exit status and the end of its output.
func Command(template string, out io.Writer) (Action, error) {
	if strings.TrimSpace(template) == "" {
		return nil, errors.New("empty command template")
	}
	if !strings.Contains(template, PlaceholderNode) && !strings.Contains(template, PlaceholderNum) && !strings.Contains(template, PlaceholderAddr) {
		return nil, fmt.Errorf("command template %q names no node: use %s, %s or %s", template, PlaceholderNode, PlaceholderNum, PlaceholderAddr)
	}
	return func(ctx context.Context, n Node) error {
		line, err := Expand(template, n)
		if err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, "sh", "-c", line)
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		err = cmd.Run()
		if out != nil && buf.Len() > 0 {
			for _, l := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
				fmt.Fprintf(out, "    | %s\n", l)
			}
		}
		if err != nil {
			return fmt.Errorf("command %q: %w%s", line, err, tail(buf.String()))
		}
		return nil
	}, nil
}

// Expand substitutes n into a command template.
func Expand(template string, n Node) (string, error) {
	if !idPattern.MatchString(n.ID) {
		return "", fmt.Errorf("node id %q is not safe to put into a shell command", n.ID)
	}
	line := strings.ReplaceAll(template, PlaceholderNode, n.ID)
	if strings.Contains(line, PlaceholderNum) {
		num := numPattern.FindString(n.ID)
		if num == "" {
			return "", fmt.Errorf("node id %q ends with no number for %s", n.ID, PlaceholderNum)
		}
		line = strings.ReplaceAll(line, PlaceholderNum, num)
	}
	if strings.Contains(line, PlaceholderAddr) {
		if !addrPattern.MatchString(n.Addr) {
			return "", fmt.Errorf("address %q of node %s is not safe to put into a shell command", n.Addr, n.ID)
		}
		line = strings.ReplaceAll(line, PlaceholderAddr, n.Addr)
	}
	return line, nil
}

// SyncWriter returns a writer that serializes writes to w, for a Progress
// writer that commands' output shares.
func SyncWriter(w io.Writer) io.Writer { return &syncWriter{w: w} }

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// tail is the end of a command's output, for an error message.
func tail(out string) string {
	out = strings.TrimSpace(out)
	if out == "" {
		return ""
	}
	lines := strings.Split(out, "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return ":\n" + strings.Join(lines, "\n")
}
