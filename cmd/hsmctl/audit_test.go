package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// TestAuditVerifyAgainstCheckpoints runs hsmctl audit verify against a
// real broker whose node checkpoints its audit chain head through Raft.
// The intact log verifies and is anchored, with MACs checked by the node's
// HSM; the same log with lines cut from its end, with its head removed, or
// rewritten from its first line on with fresh hashes, each still a valid
// chain, fails and says what is missing; a log that ends with an intent
// line fails as an intent without outcome.
func TestAuditVerifyAgainstCheckpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a broker")
	}
	c := hsmtest.NewEmptyCluster(t)
	c.Audit, c.AuditCheckpointInterval = true, 50*time.Millisecond
	nd := c.AddNode()
	ca, cert, key := c.TLSFiles("audra", "auditor")
	conn := []string{"--addr", nd.GRPCAddr, "--ca", ca, "--cert", cert, "--tls-key", key}
	aca, acert, akey := c.TLSFiles("root", "admin")
	for _, alias := range []string{"alias/v1", "alias/v2", "alias/v3"} {
		if r := runArgs("keys", "create", "--alias", alias, "--addr", nd.GRPCAddr, "--ca", aca, "--cert", acert, "--tls-key", akey); r.code != 0 {
			t.Fatalf("create %s: %d %s", alias, r.code, r.stderr)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, seq, _ := nd.AuditLog.Head()
		hs := nd.Raft.State().AuditHeads(nd.ID)
		if len(hs) == 1 && hs[0].Last.Seq == seq {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("head seq %d not checkpointed: %+v", seq, hs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, err := os.ReadFile(nd.AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	lines = lines[:len(lines)-1]
	dir := t.TempDir()
	verify := func(name string, content string, extra ...string) result {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return runArgs(append(append([]string{"audit", "verify", path}, extra...), conn...)...)
	}
	r := verify("intact.log", strings.Join(lines, ""))
	if r.code != 0 || !strings.Contains(r.stdout, "Anchored") || !strings.Contains(r.stdout, "MACs were checked by node "+nd.ID) {
		t.Fatalf("intact log: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for name, tc := range map[string]struct {
		content, want string
	}{
		"cut":       {strings.Join(lines[:len(lines)-2], ""), "lines cut from the end"},
		"head":      {strings.Join(lines[2:], ""), "head removed"},
		"rewritten": {rehashed(t, lines), "rewritten chain"},
	} {
		if rep, err := audit.Verify(strings.NewReader(tc.content)); err != nil {
			t.Fatalf("%s: the altered log should still be a chain: %+v %v", name, rep, err)
		}
		r := verify(name+".log", tc.content)
		if r.code != exitError || !strings.Contains(r.stdout, "PROBLEM: "+tc.want) {
			t.Errorf("%s: %d\n%s%s", name, r.code, r.stdout, r.stderr)
		}
		// The file alone cannot tell.
		if r := verify(name+".log", tc.content, "--offline"); name != "cut" && r.code != 0 {
			t.Errorf("%s --offline: %d %s", name, r.code, r.stdout)
		}
	}
	// An emptied log names no node: checked against the checkpoints of the
	// node that answers (or --node), it has lost every line they cover.
	r = verify("empty.log", "")
	if r.code != exitError || !strings.Contains(r.stdout, "PROBLEM: the file is empty, but node "+nd.ID+"'s log was checkpointed") {
		t.Errorf("emptied log: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = verify("empty.log", "", "-o", "json")
	if r.code != exitError || !strings.Contains(r.stdout, `"ok": false`) {
		t.Errorf("emptied log, json: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := verify("empty.log", "", "--node", "node-without-a-log"); r.code != 0 || !strings.Contains(r.stdout, "intact (empty)") {
		t.Errorf("an empty log of a node with no checkpoint: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Cut right after CreateKey's intent line (written before its change
	// was proposed): an intent without outcome. The node's own work before
	// it (internal:...) has its intents and outcomes too.
	i := 0
	for !strings.Contains(lines[i], `"result":"INTENT"`) || !strings.Contains(lines[i], `"kms:CreateKey"`) {
		i++
	}
	r = verify("intent.log", strings.Join(lines[:i+1], ""), "--offline")
	if r.code != exitError || !strings.Contains(r.stdout, "PROBLEM: intent without outcome at line") || !strings.Contains(r.stdout, "kms:CreateKey") {
		t.Fatalf("intent without outcome: %d\n%s", r.code, r.stdout)
	}

	// fetch from an --offset within the log copies its rest, silently;
	// from one past its end it copies nothing, and says why.
	r = runArgs(append([]string{"audit", "fetch", "--offset", "1"}, conn...)...)
	if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, `"kms:CreateKey"`) {
		t.Fatalf("audit fetch --offset 1: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runArgs(append([]string{"audit", "fetch", "--offset", "1000000000"}, conn...)...)
	want := "hsmctl: warning: --offset 1000000000 is past the end of " + nd.ID + "'s audit log ("
	if r.code != 0 || r.stdout != "" || !strings.HasPrefix(r.stderr, want) || !strings.Contains(r.stderr, " bytes); nothing to copy") {
		t.Fatalf("audit fetch past the end: exit %d, stdout %q, stderr %q; want %q", r.code, r.stdout, r.stderr, want)
	}
}

// rehashed is the log with its first line's principal changed and every
// line's prev and hash recomputed, as anyone who can write the file can.
func rehashed(t *testing.T, lines []string) string {
	t.Helper()
	var out bytes.Buffer
	prev := audit.Genesis
	for i, line := range lines {
		var r audit.Record
		body := strings.TrimSuffix(line, "\n")
		body = body[:strings.LastIndex(body, `,"hash":"`)] + "}"
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			r.Principal = "mallory"
		}
		r.Prev = prev
		enc, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(enc)
		prev = hex.EncodeToString(sum[:])
		out.Write(enc[:len(enc)-1])
		out.WriteString(`,"hash":"` + prev + "\"}\n")
	}
	return out.String()
}
