package main

import (
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hsmbroker/hsmbroker/keys"
	"golang.org/x/term"
)

// Size limits on what hsmctl reads for one call, so that a wrong --in
// fails at once instead of being read whole: the broker's own.
const (
	maxPlaintext  = keys.MaxPlaintext      // Encrypt, GenerateMac, and Sign without hashing locally
	maxCiphertext = keys.MaxCiphertextBlob // Decrypt; MACs
	maxSignature  = keys.MaxSignature      // Verify
)

// openInput opens --in: a file, or standard input for "" and "-".
func (a *app) openInput(path string) (io.ReadCloser, error) {
	if path == "" || path == "-" {
		return io.NopCloser(a.stdin), nil
	}
	return os.Open(path)
}

// readInput reads all of --in, refusing more than limit bytes; hint says
// what to do instead.
func (a *app) readInput(path string, limit int, hint string) ([]byte, error) {
	r, err := a.openInput(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return readLimited(r, limit, inputName(path), hint)
}

func readLimited(r io.Reader, limit int, name, hint string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(b) > limit {
		msg := fmt.Sprintf("%s is larger than %d bytes", name, limit)
		if hint != "" {
			msg += "; " + hint
		}
		return nil, fmt.Errorf("%s", msg)
	}
	return b, nil
}

func inputName(path string) string {
	if path == "" || path == "-" {
		return "standard input"
	}
	return path
}

// decodeBase64 decodes standard base64, ignoring surrounding white space.
func decodeBase64(b []byte, what string) ([]byte, error) {
	out, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("%s is not valid base64: %w", what, err)
	}
	return out, nil
}

// encode is data as written: raw, or base64 and a newline.
func encode(data []byte, asBase64 bool) []byte {
	if !asBase64 {
		return data
	}
	return []byte(b64(data) + "\n")
}

// writeOutput writes a binary result to --out (a new file, or with
// --force a replaced one; see outFile) or, for "" and "-", to standard
// output, which it refuses when that is a terminal and the data is raw.
func (a *app) writeOutput(out *outFlags, data []byte, asBase64 bool) error {
	if !out.toFile() {
		if !asBase64 && isTerminal(a.stdout) {
			return usageErr("refusing to write binary output to a terminal; use --out FILE or --base64")
		}
		_, err := a.stdout.Write(encode(data, asBase64))
		return err
	}
	return out.write(encode(data, asBase64))
}

// emitBinary writes a command's binary result and its details: in text
// mode, the data alone, as writeOutput does; in JSON mode, obj on standard
// output with the data, base64, as obj[field], unless --out is given, in
// which case the data goes there and obj names the file instead.
func (a *app) emitBinary(out *outFlags, asBase64 bool, data []byte, field string, obj map[string]any) error {
	if !a.json() {
		return a.writeOutput(out, data, asBase64)
	}
	if out.toFile() {
		if err := out.write(encode(data, asBase64)); err != nil {
			return err
		}
		obj["out"] = out.path
	} else {
		obj[field] = b64(data)
	}
	return printJSON(a.stdout, obj)
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// parsePairs parses repeated k=v flag values. Keys must be non-empty and
// distinct; values may be empty. No values gives nil.
func parsePairs(flag string, vals []string) (map[string]string, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(vals))
	for _, kv := range vals {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErr(fmt.Sprintf("invalid %s %q: want KEY=VALUE", flag, kv))
		}
		if _, dup := out[k]; dup {
			return nil, usageErr(fmt.Sprintf("%s %q given twice", flag, k))
		}
		out[k] = v
	}
	return out, nil
}

// confirm reports a change that has nothing else to show: obj with
// -o json, else one line made of format and args.
func (a *app) confirm(obj map[string]any, format string, args ...any) error {
	if a.json() {
		return printJSON(a.stdout, obj)
	}
	_, err := fmt.Fprintf(a.stdout, format+"\n", args...)
	return err
}
