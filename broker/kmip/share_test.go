package kmip

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	"google.golang.org/grpc/codes"
)

// A client that owns its share of the cluster's KMIP objects is refused
// Register, Create and Create Key Pair with General Failure naming the
// limit, before anything is proposed; another client still has room.
func TestObjectShareRefused(t *testing.T) {
	hsmtest.RequireSoftHSM(t)
	e := startKMIPWith(t, hsmtest.NewCluster(t, 1), 0, func(c *Config) { c.MaxObjectsPerOwner = 3 })
	c := e.dial(t, "app", authz.RoleUser)
	reg := func(v version) []ttlv.Item {
		return []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(randBytes(t, 16))}
	}
	v := version{1, 4}
	first := ids(c.do(v, opRegister, reg(v)...))[0]
	c.do(v, opRegister, reg(v)...)
	pair := []ttlv.Item{ttlv.Struct(tagCommonTemplateAttr, attr1("Cryptographic Algorithm", ttlv.Enum(0, 6)), attr1("Cryptographic Length", ttlv.Int(0, 256)))}
	state := e.c.Nodes[0].Raft.State()
	before := state.Digest()
	check := func(what string, v version, code uint32, payload []ttlv.Item) {
		t.Helper()
		_, rs := c.send(v, op{code, payload})
		if len(rs) != 1 || rs[0].status != statusOperationFailed || rs[0].reason != reasonGeneralFailure || !strings.Contains(rs[0].message, "at most 3") {
			t.Errorf("%s at %s: want General Failure naming the share, got %+v", what, v, rs)
		}
		if state.Digest() != before {
			t.Fatalf("%s at %s: a refused request changed the replicated state", what, v)
		}
	}
	check("Create Key Pair past the share", v, opCreateKeyPair, pair) // two objects, one left
	c.do(v, opRegister, reg(v)...)
	before = state.Digest()
	for _, v := range []version{{1, 0}, {1, 4}, {2, 0}} {
		check("Register", v, opRegister, reg(v))
	}
	check("Create", v, opCreate, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), ttlv.Struct(tagTemplateAttribute,
		attr1("Cryptographic Algorithm", ttlv.Enum(0, 3)), attr1("Cryptographic Length", ttlv.Int(0, 128)))})
	// Another identity has its own share.
	e.dial(t, "other", authz.RoleUser).do(v, opRegister, reg(v)...)
	// Destroying one of its objects gives the first client room again.
	c.do(v, opDestroy, uid(first))
	c.do(v, opRegister, reg(v)...)
}

// Concurrent Registers of one client cannot pass its share: each is checked
// again when its object is applied, so of 12 sent at once on 12
// connections, with a share of 3, exactly 3 are stored and the others are
// refused with General Failure naming the share.
func TestObjectShareConcurrent(t *testing.T) {
	hsmtest.RequireSoftHSM(t)
	e := startKMIPWith(t, hsmtest.NewCluster(t, 1), 0, func(c *Config) { c.MaxObjectsPerOwner = 3 })
	v := version{1, 4}
	const n = 12
	clients := make([]*client, n)
	reqs := make([][]byte, n)
	for i := range clients {
		clients[i] = e.dial(t, "app", authz.RoleUser)
		b, err := request(v, op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(randBytes(t, 16))}}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		reqs[i] = b
	}
	var (
		wg            sync.WaitGroup
		mu            sync.Mutex
		stored, share int
		other         []string
	)
	start := make(chan struct{})
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := c.roundTrip(reqs[i])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				other = append(other, err.Error())
				return
			}
			bi, _ := resp.Child(tagBatchItem)
			st, _ := bi.Child(tagResultStatus)
			msg, _ := bi.Child(tagResultMessage)
			reason, _ := bi.Child(tagResultReason)
			switch {
			case uint32(st.Int) == statusSuccess:
				stored++
			case uint32(st.Int) == statusOperationFailed && uint32(reason.Int) == reasonGeneralFailure && strings.Contains(msg.Text(), "at most 3"):
				share++
			default:
				other = append(other, fmt.Sprintf("status %d reason %d: %s", st.Int, reason.Int, msg.Text()))
			}
		}()
	}
	close(start)
	wg.Wait()
	if stored != 3 || share != n-3 || len(other) != 0 {
		t.Fatalf("%d stored, %d refused for the share, others %q; want 3, %d, none", stored, share, other, n-3)
	}
	if _, owned := e.c.Nodes[0].Raft.State().KMIPObjectCount("app"); owned != 3 {
		t.Fatalf("app owns %d objects, want 3", owned)
	}
}

// The cluster's own limit on KMIP objects is answered General Failure in
// every version: not Permission Denied (1.x) or Wrong Key Lifecycle State
// (2.0), which would blame the client's rights or the object.
func TestObjectLimitReason(t *testing.T) {
	err := fmt.Errorf("store: %w", &broker.Error{Code: codes.ResourceExhausted, Exception: broker.ExcLimitExceeded, Message: "the cluster holds 100000 KMIP objects; the limit is 100000", Err: broker.ErrKMIPObjectLimit})
	if oe := asOpError(err); oe.reason != reasonGeneralFailure || !strings.Contains(oe.msg, "limit") {
		t.Fatalf("asOpError = %s %q", reasonName(oe.reason), oe.msg)
	}
}
