package broker_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/audit"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// eventually polls check until it returns nil, for at most 20 seconds.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAccessChangesReachFollowers: key policies, grants and principals'
// roles changed through the leader are enforced by every follower, and a
// change made through a follower by every node; once the nodes have
// converged, every node gives the same verdict.
func TestAccessChangesReachFollowers(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewCluster(t, 3)
	ctx := ctxT(t)
	leader := c.Leader(t)
	var followers []int
	for _, nd := range c.Followers(t) {
		followers = append(followers, nd.Index)
	}
	admin := newClient(c.DialAs(leader.Index, "root", authz.RoleAdmin))
	key := func() string {
		resp, err := admin.keys.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/shared"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetKeyMetadata().GetKeyId()
	}()
	ec := map[string]string{"tenant": "a"}
	enc, err := admin.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: []byte("p"), EncryptionContext: ec})
	if err != nil {
		t.Fatal(err)
	}
	// Clients of every node, as alice and bob.
	type who struct{ alice, bob clients }
	on := make([]who, len(c.Nodes))
	for i := range c.Nodes {
		on[i] = who{newClient(c.DialAs(i, "alice", authz.RoleUser)), newClient(c.DialAs(i, "bob", authz.RoleUser))}
	}
	decrypt := func(cl clients) error {
		_, err := cl.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob(), EncryptionContext: ec})
		return err
	}
	encrypt := func(cl clients) error {
		_, err := cl.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: key, Plaintext: []byte("q"), EncryptionContext: ec})
		return err
	}
	// expect waits for each follower to reach the verdict, then, with the
	// nodes converged, checks it on every node at once.
	expect := func(step string, call func(cl clients) error, pick func(w who) clients, allowed bool) {
		t.Helper()
		verdict := func(i int) error {
			err := call(pick(on[i]))
			switch {
			case allowed && err != nil:
				return err
			case !allowed && !isDenied(err):
				return errorf("got %v, want PermissionDenied", err)
			}
			return nil
		}
		for _, f := range followers {
			eventually(t, step+" on follower "+c.Nodes[f].ID, func() error { return verdict(f) })
		}
		c.WaitConverged(t)
		for i := range c.Nodes {
			if err := verdict(i); err != nil {
				t.Fatalf("%s on %s after convergence: %v", step, c.Nodes[i].ID, err)
			}
		}
	}
	alice := func(w who) clients { return w.alice }
	bob := func(w who) clients { return w.bob }

	expect("alice before any change", decrypt, alice, false)
	put := func(via clients, policy string) {
		t.Helper()
		if _, err := via.keys.PutKeyPolicy(ctx, &pb.PutKeyPolicyRequest{KeyId: key, Policy: policy}); err != nil {
			t.Fatal(err)
		}
	}
	put(admin, `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*"},
	  {"Effect":"Allow","Principal":{"AWS":"alice"},"Action":"kms:Decrypt","Condition":{"StringEquals":{"kms:EncryptionContext:tenant":"a"}}}]}`)
	expect("alice allowed by the policy", decrypt, alice, true)

	g, err := admin.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: key, GranteePrincipal: "bob", Operations: []string{"Encrypt"}})
	if err != nil {
		t.Fatal(err)
	}
	expect("bob allowed by the grant", encrypt, bob, true)

	// A change through a follower binds the leader too.
	viaFollower := newClient(c.DialAs(followers[0], "root", authz.RoleAdmin))
	put(viaFollower, `{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*"},
	  {"Effect":"Deny","Principal":{"AWS":"alice"},"Action":"kms:*"}]}`)
	expect("alice denied by a Deny put through a follower", decrypt, alice, false)
	if err := decrypt(on[leader.Index].alice); !isDenied(err) {
		t.Fatalf("leader after a follower's change: %v", err)
	}

	if _, err := admin.keys.RevokeGrant(ctx, &pb.RevokeGrantRequest{KeyId: key, GrantId: g.GetGrantId()}); err != nil {
		t.Fatal(err)
	}
	expect("bob after revocation", encrypt, bob, false)

	if _, err := admin.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: key, GranteePrincipal: "bob", Operations: []string{"Encrypt"}}); err != nil {
		t.Fatal(err)
	}
	expect("bob with a new grant", encrypt, bob, true)
	if _, err := admin.access.SetPrincipalRole(ctx, &pb.SetPrincipalRoleRequest{Principal: "bob", Role: pb.PrincipalRole_PRINCIPAL_ROLE_NONE}); err != nil {
		t.Fatal(err)
	}
	expect("bob demoted to role none", encrypt, bob, false)
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// TestEveryNodeAudits: each node writes the requests it answers to its own
// audit log; a write through a follower is one line on the follower (the
// client's request) and one on the leader (the follower's ForwardCommand,
// as node identity), both with the request id the client sent.
func TestEveryNodeAudits(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := hsmtest.NewEmptyCluster(t)
	c.Audit = true
	for range 3 {
		c.AddNode()
	}
	ctx := ctxT(t)
	leader := c.Leader(t)
	follower := c.Nodes[(leader.Index+1)%3]
	lines := func(nd *hsmtest.Node) []audit.Record {
		b, err := os.ReadFile(nd.AuditPath())
		if err != nil {
			t.Fatal(err)
		}
		return auditLines(t, b)
	}
	before := map[string]int{}
	for _, nd := range c.Nodes {
		before[nd.ID] = len(lines(nd))
	}
	admin := newClient(c.DialAs(follower.Index, "root", authz.RoleAdmin))
	k, err := admin.keys.CreateKey(withRequestID(ctx, "create-via-follower"), &pb.CreateKeyRequest{AliasName: "alias/audited"})
	if err != nil {
		t.Fatal(err)
	}
	user := newClient(c.DialAs(leader.Index, "carol", authz.RoleUser))
	_, err = user.crypto.Encrypt(withRequestID(ctx, "denied-on-leader"), &pb.EncryptRequest{KeyId: k.GetKeyMetadata().GetKeyId(), Plaintext: []byte("x")})
	if !isDenied(err) {
		t.Fatalf("carol encrypt: %v", err)
	}
	find := func(nd *hsmtest.Node, match func(audit.Record) bool) audit.Record {
		t.Helper()
		for _, r := range lines(nd)[before[nd.ID]:] {
			if r.Result != audit.ResultIntent && match(r) { // the outcome, not the intent before a change
				return r
			}
		}
		t.Fatalf("%s: no such audit line", nd.ID)
		return audit.Record{}
	}
	r := find(follower, func(r audit.Record) bool { return r.RequestID == "create-via-follower" })
	if r.Principal != "root" || r.Operation != "kms:CreateKey" || r.Result != "OK" || r.Node != follower.ID || r.KeyID != k.GetKeyMetadata().GetKeyId() {
		t.Errorf("follower's line: %+v", r)
	}
	r = find(leader, func(r audit.Record) bool {
		return r.Operation == "hsmbroker:ForwardCommand" && r.Principal == follower.ID
	})
	if r.RequestID != "create-via-follower" {
		t.Errorf("leader's ForwardCommand line has request id %q, want the client's %q", r.RequestID, "create-via-follower")
	}
	if r.Role != "node" || r.Result != "OK" {
		t.Errorf("leader's ForwardCommand line: %+v", r)
	}
	r = find(leader, func(r audit.Record) bool { return r.RequestID == "denied-on-leader" })
	if r.Principal != "carol" || r.Decision != "deny" || r.Result != broker.ExcAccessDenied {
		t.Errorf("leader's denial: %+v", r)
	}
}
