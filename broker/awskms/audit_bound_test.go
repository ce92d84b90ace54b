package awskms_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/broker/audit"
)

// TestAWSAuditAmplification: an Encrypt through the AWS endpoint, signed
// by a principal the key's policy does not allow, with an encryption
// context of 880 KiB (just within the endpoint's 1 MiB body limit), is
// refused, and its audit line stays within audit.MaxLine and does not
// carry the context.
func TestAWSAuditAmplification(t *testing.T) {
	a := newAccessEnv(t)
	key := createKey(t, a.kms, "", "")
	start := len(bytes.Split(a.w.bytes(), []byte("\n"))) - 1
	ec := map[string]string{}
	for i := range 8 {
		ec[strings.Repeat(string(rune('a'+i)), 8)] = strings.Repeat("x", 110<<10)
	}
	r := a.as(a.app, "Encrypt", map[string]any{"KeyId": key, "Plaintext": []byte("p"), "EncryptionContext": ec})
	if r.status == http.StatusOK {
		t.Fatalf("a refused principal's Encrypt succeeded: %s", r.body)
	}
	b := a.w.bytes()
	lines := bytes.SplitAfter(b, []byte("\n"))[start:]
	if len(lines) < 1 || len(lines[0]) == 0 {
		t.Fatal("no audit line for the refused Encrypt")
	}
	for i, line := range lines {
		if len(line) > audit.MaxLine {
			t.Fatalf("audit line %d has %d bytes, more than %d", start+i+1, len(line), audit.MaxLine)
		}
	}
	var rec audit.Record
	if err := json.Unmarshal(lines[0], &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Operation != "kms:Encrypt" || rec.EncryptionContext != nil || !strings.Contains(rec.ContextOmitted, "8192") {
		t.Fatalf("audit line %+v", rec)
	}
	if rep, err := audit.Verify(bytes.NewReader(b)); err != nil || !rep.OK() {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}
