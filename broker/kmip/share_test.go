package kmip

import (
	"fmt"
	"strings"
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

// The cluster's own limit on KMIP objects is answered General Failure in
// every version: not Permission Denied (1.x) or Wrong Key Lifecycle State
// (2.0), which would blame the client's rights or the object.
func TestObjectLimitReason(t *testing.T) {
	err := fmt.Errorf("store: %w", &broker.Error{Code: codes.ResourceExhausted, Exception: broker.ExcLimitExceeded, Message: "the cluster holds 100000 KMIP objects; the limit is 100000", Err: broker.ErrKMIPObjectLimit})
	if oe := asOpError(err); oe.reason != reasonGeneralFailure || !strings.Contains(oe.msg, "limit") {
		t.Fatalf("asOpError = %s %q", reasonName(oe.reason), oe.msg)
	}
}
