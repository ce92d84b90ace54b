package kmip

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
	"github.com/hsmbroker/hsmbroker/hsmtest"
)

func keyMaterial(t *testing.T, p ttlv.Item) []byte {
	t.Helper()
	sk, _ := p.Child(tagSymmetricKey)
	kb, _ := sk.Child(tagKeyBlock)
	kv, _ := kb.Child(tagKeyValue)
	km, _ := kv.Child(tagKeyMaterial)
	return km.Bytes
}

// Three nodes: an object registered through one node is located and read
// through another, and still is after the leader stops.
func TestThreeNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-node cluster; skipped under -short")
	}
	c := hsmtest.NewCluster(t, 3)
	leader := c.Leader(t)
	fs := c.Followers(t)
	follower, other := fs[1].Index, fs[0].Index
	envs := map[int]*env{}
	for i := range c.Nodes {
		envs[i] = startKMIP(t, c, i)
	}
	v := version{1, 4}
	key := randBytes(t, 32)
	w := envs[follower].dial(t, "app", authz.RoleUser)
	id := ids(w.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey),
		ttlv.Struct(tagTemplateAttribute, attr1("Name", nameValue("replicated"))), symKey(key)))[0]
	w.do(v, opActivate, uid(id))

	r := envs[other].dial(t, "app", authz.RoleUser)
	if got := ids(r.do(v, opLocate, attr1("Name", nameValue("replicated")))); len(got) != 1 || got[0] != id {
		t.Fatalf("Locate through another node = %v", got)
	}
	if !bytes.Equal(keyMaterial(t, r.do(v, opGet, uid(id))), key) {
		t.Fatal("Get through another node returned other material")
	}

	leader.Stop()
	survivor := follower
	if c.Nodes[survivor] == leader {
		survivor = other
	}
	c.Leader(t)
	s := envs[survivor].dial(t, "app", authz.RoleUser)
	if !bytes.Equal(keyMaterial(t, s.do(v, opGet, uid(id))), key) {
		t.Fatal("Get after the leader stopped returned other material")
	}
	s.do(v, opRevoke, uid(id), ttlv.Struct(tagRevocationReason, ttlv.Enum(tagRevocationReasonCode, revocationUnspec)))
	s.do(v, opDestroy, uid(id))
}

// Every KMIP request is one audit line of front kmip, with its principal,
// action, result and the object it named; a refused one says why.
func TestAudited(t *testing.T) {
	c, e := startAuditedKMIP(t)
	v := version{1, 2}
	u := e.dial(t, "app", authz.RoleUser)
	id := ids(u.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(randBytes(t, 16))))[0]
	u.do(v, opGet, uid(id))
	e.dial(t, "watcher", authz.RoleAuditor).fail(v, opGet, uid(id))
	u.fail(v, 0x24, uid(id)) // MAC Verify: not served, still audited

	var got, intents []auditLine
	for _, l := range kmipAuditLines(t, c, 0) {
		if l.Result == "INTENT" {
			intents = append(intents, l) // a change is audited before it is proposed
		} else {
			got = append(got, l)
		}
	}
	if len(intents) != 1 || intents[0].Operation != "kmip:Register" || intents[0].KeyRef != id {
		t.Fatalf("intent lines: %+v, want one for the Register", intents)
	}
	if len(got) != 4 {
		t.Fatalf("%d KMIP audit lines: %+v", len(got), got)
	}
	want := []auditLine{
		{"kmip", "app", "kmip:Register", "OK", "allow", id, ""},
		{"kmip", "app", "kmip:Get", "OK", "allow", id, ""},
		{"kmip", "watcher", "kmip:Get", "PermissionDenied", "deny", id, ""},
		{"kmip", "app", "kmip:Operation0x24", "OperationNotSupported", "allow", "", ""},
	}
	for i, w := range want {
		g := got[i]
		g.KeyID = ""
		if g != w {
			t.Errorf("line %d = %+v, want %+v", i, g, w)
		}
	}
	if got[0].KeyID == "" || got[1].KeyID != got[0].KeyID || got[3].KeyID != "" {
		t.Errorf("the wrapping key is not named: %+v", got)
	}
}

// auditLine is one audit line of the KMIP front, as the tests read it.
type auditLine struct {
	Front, Principal, Operation, Result, Decision string
	KeyRef                                        string `json:"key_ref"`
	KeyID                                         string `json:"key_id"`
}

// startAuditedKMIP starts a one-node cluster that writes audit lines, and
// the KMIP server of its node.
func startAuditedKMIP(t *testing.T) (*hsmtest.Cluster, *env) {
	t.Helper()
	c := hsmtest.NewEmptyCluster(t)
	c.Audit = true
	c.AddNode()
	return c, startKMIP(t, c, 0)
}

// kmipAuditLines reads the KMIP front's audit lines of node i.
func kmipAuditLines(t *testing.T, c *hsmtest.Cluster, i int) []auditLine {
	t.Helper()
	f, err := os.Open(c.Nodes[i].AuditPath())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l auditLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		if l.Front == "kmip" {
			out = append(out, l)
		}
	}
	return out
}

// TestPlaceholderItemsAuditTheirObject: an item that names its object by
// the ID Placeholder (after a Locate, a Register) is audited with that
// object's id as key_ref, in its intent line and its result line alike.
func TestPlaceholderItemsAuditTheirObject(t *testing.T) {
	c, e := startAuditedKMIP(t)
	v := version{1, 4}
	u := e.dial(t, "app", authz.RoleUser)
	id := ids(u.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey),
		ttlv.Struct(tagTemplateAttribute, attr1("Name", nameValue("placeholder-audit"))), symKey(randBytes(t, 16))))[0]
	locate := op{opLocate, []ttlv.Item{attr1("Name", nameValue("placeholder-audit"))}}
	revoke := op{opRevoke, []ttlv.Item{ttlv.Struct(tagRevocationReason, ttlv.Enum(tagRevocationReasonCode, revocationUnspec))}}
	for _, batch := range [][]op{{locate, {opGet, nil}}, {locate, {opActivate, nil}, revoke, {opDestroy, nil}}} {
		if _, rs := u.send(v, batch...); len(rs) != len(batch) || rs[len(rs)-1].status != statusSuccess {
			t.Fatalf("batch of %d items: %+v", len(batch), rs)
		}
	}
	seen := map[string]int{}
	for _, l := range kmipAuditLines(t, c, 0) {
		switch l.Operation {
		case "kmip:Get", "kmip:Activate", "kmip:Revoke", "kmip:Destroy":
			seen[l.Operation+" "+l.Result]++
			if l.KeyRef != id {
				t.Errorf("%s %s: key_ref %q, want %s", l.Operation, l.Result, l.KeyRef, id)
			}
		}
	}
	for _, w := range []string{"kmip:Get OK", "kmip:Activate INTENT", "kmip:Activate OK", "kmip:Revoke INTENT", "kmip:Revoke OK", "kmip:Destroy INTENT", "kmip:Destroy OK"} {
		if seen[w] != 1 {
			t.Errorf("%d audit lines %q, want 1 (%v)", seen[w], w, seen)
		}
	}
}
