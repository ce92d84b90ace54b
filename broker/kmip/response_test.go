package kmip

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// continueOnError is the Batch Error Continuation Option Continue.
var continueOnError = ttlv.Enum(tagBatchErrorContinuation, 1)

// TestResponseIsBounded: a small request of many Locate items cannot ask
// for a response larger than the server's message limit, or than the
// client's Maximum Response Size. The items that do not fit answer
// Response Too Large; once the response is full, the rest are not run.
func TestResponseIsBounded(t *testing.T) {
	hsmtest.RequireSoftHSM(t)
	const limit = 16 << 10
	e := startKMIPWith(t, hsmtest.NewCluster(t, 1), 0, func(c *Config) { c.MaxMessage = limit })
	c := e.dial(t, "mysql", authz.RoleUser)
	v := version{1, 4}
	var regs []op
	for range 30 {
		regs = append(regs, op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey),
			ttlv.Struct(tagTemplateAttribute, attr1("Object Group", ttlv.Text(0, "bounded"))), symKey(randBytes(t, 32))}})
	}
	if _, rs := c.send(v, regs...); len(rs) != 30 || rs[29].status != statusSuccess {
		t.Fatalf("30 Registers: %+v", rs[len(rs)-1])
	}
	locate := op{opLocate, []ttlv.Item{attr1("Object Group", ttlv.Text(0, "bounded"))}}
	many := make([]op, MaxBatch)
	for i := range many {
		many[i] = locate
	}

	for _, tc := range []struct {
		name   string
		header []ttlv.Item
		max    int
	}{
		{"the server's limit", []ttlv.Item{continueOnError}, limit},
		{"Maximum Response Size", []ttlv.Item{continueOnError, ttlv.Int(tagMaximumResponseSize, 12000)}, 12000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, rs := c.sendWith(v, tc.header, many...)
			b, _ := resp.Encode()
			if len(b) > tc.max {
				t.Fatalf("a response of %d bytes, over %d", len(b), tc.max)
			}
			if len(rs) != MaxBatch {
				t.Fatalf("%d items answered, want %d", len(rs), MaxBatch)
			}
			ok := 0
			for ok < len(rs) && rs[ok].status == statusSuccess {
				if n := len(ids(rs[ok].payload)); n != 30 {
					t.Fatalf("item %d located %d objects, want 30", ok, n)
				}
				ok++
			}
			if ok == 0 || ok == len(rs) {
				t.Fatalf("%d of %d items answered in full; want some, not all", ok, len(rs))
			}
			for i, r := range rs[ok:] {
				if r.status != statusOperationFailed || r.reason != reasonResponseTooLarge {
					t.Fatalf("item %d: %+v, want Response Too Large", ok+i, r)
				}
			}
		})
	}

	// Stop (the default): the response ends at the first item that does
	// not fit.
	_, rs := c.sendWith(v, []ttlv.Item{ttlv.Int(tagMaximumResponseSize, 5000)}, many...)
	if last := rs[len(rs)-1]; len(rs) == MaxBatch || last.reason != reasonResponseTooLarge {
		t.Fatalf("Stop: %d items, the last %+v", len(rs), last)
	}
	// Continue, and no room for an answer to each item: nothing runs.
	if _, rs := c.sendWith(v, []ttlv.Item{continueOnError, ttlv.Int(tagMaximumResponseSize, 5000)}, many...); len(rs) != 1 || rs[0].reason != reasonResponseTooLarge {
		t.Fatalf("Continue, %d items in 5000 bytes: %+v", MaxBatch, rs)
	}
	if _, rs := c.sendWith(v, []ttlv.Item{ttlv.Int(tagMaximumResponseSize, 0)}, locate); len(rs) != 1 || rs[0].reason != reasonInvalidMessage {
		t.Fatalf("Maximum Response Size 0: %+v", rs)
	}
}

// TestFailedItemClearsThePlaceholder: with Continue, an item that fails
// leaves no ID Placeholder, so the next item that names no object fails
// instead of acting on what an earlier item produced.
func TestFailedItemClearsThePlaceholder(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "mysql", authz.RoleUser)
	v := version{1, 4}
	register := op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(randBytes(t, 32))}}
	tooLong := op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(make([]byte, 8192))}}
	missing := op{opGet, []ttlv.Item{uid("no-such-object")}}
	for _, failing := range []op{tooLong, missing} {
		_, rs := c.sendWith(v, []ttlv.Item{continueOnError}, register, failing, op{opActivate, nil})
		if len(rs) != 3 || rs[0].status != statusSuccess || rs[1].status != statusOperationFailed {
			t.Fatalf("Register, then a failing %s: %+v", opNames[failing.code], rs)
		}
		if rs[2].status != statusOperationFailed || rs[2].reason != reasonMissingData {
			t.Fatalf("Activate after a failed %s: %+v, want Missing Data", opNames[failing.code], rs[2])
		}
		if o := e.object(t, ids(rs[0].payload)[0]); o.State != cluster.KMIPPreActive {
			t.Fatalf("the first item's object was activated (state %d)", o.State)
		}
	}
}

// TestResultMessageIsBoundedUTF8: a Result Message may quote what the
// client sent; it is sent as valid UTF-8 and at most maxResultMessage
// bytes, whatever was quoted.
func TestResultMessageIsBoundedUTF8(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "mysql", authz.RoleUser)
	_, rs := c.send(version{1, 4}, op{opGet, []ttlv.Item{ttlv.Text(tagUniqueIdentifier, "id-\xff\xfe")}})
	if len(rs) != 1 || rs[0].status != statusOperationFailed || !utf8.ValidString(rs[0].message) {
		t.Fatalf("Get of an id that is not UTF-8: %+v", rs)
	}
	for _, msg := range []string{strings.Repeat("é", 400), strings.Repeat("x", 511) + "\xff" + strings.Repeat("y", 100)} {
		got := resultMessage(msg)
		if len(got) > maxResultMessage || !utf8.ValidString(got) || !strings.HasSuffix(got, "...") {
			t.Errorf("resultMessage of %d bytes: %d bytes, valid %v", len(msg), len(got), utf8.ValidString(got))
		}
	}
}

// TestHeldAndNotReadyNodeAnswers: a server held (starting) serves a
// request once released, and answers one still held after HoldWait; a
// held server and a node that is not ready (its HSM gone) answer General
// Failure, retry, for what needs the node, and Query and Discover
// Versions, which read nothing of it, as usual.
func TestHeldAndNotReadyNodeAnswers(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "mysql", authz.RoleUser)
	v := version{1, 4}
	create := op{opCreate, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey),
		ttlv.Struct(tagTemplateAttribute, attr1("Cryptographic Algorithm", ttlv.Enum(0, 3)), attr1("Cryptographic Length", ttlv.Int(0, 256)),
			attr1("Cryptographic Usage Mask", ttlv.Int(0, 12)))}}
	stateless := []op{{opQuery, []ttlv.Item{ttlv.Enum(tagQueryFunction, 1)}}, {opDiscoverVersions, nil}}
	check := func(when string) {
		t.Helper()
		_, rs := c.send(v, create)
		if len(rs) != 1 || rs[0].reason != reasonGeneralFailure || !strings.Contains(rs[0].message, "retry") {
			t.Fatalf("Create %s: %+v, want General Failure, retry", when, rs)
		}
		for _, o := range stateless {
			if _, rs := c.send(v, o); len(rs) != 1 || rs[0].status != statusSuccess {
				t.Fatalf("%s %s: %+v", opNames[o.code], when, rs)
			}
		}
	}

	// A request that comes while the server is held waits for Release and
	// is then served; one still held after HoldWait is answered.
	e.srv.Hold("starting")
	time.AfterFunc(300*time.Millisecond, e.srv.Release)
	start := time.Now()
	if _, rs := c.send(v, create); len(rs) != 1 || rs[0].status != statusSuccess {
		t.Fatalf("Create while held, then released: %+v", rs)
	}
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Fatalf("Create while held answered after %v, before the release", took)
	}
	e.srv.Hold("starting")
	check("while held")
	e.srv.Release()
	if _, rs := c.send(v, create); len(rs) != 1 || rs[0].status != statusSuccess {
		t.Fatalf("Create once released: %+v", rs)
	}

	n := e.c.Nodes[0]
	n.Faults.Add(hsm.FaultRule{Call: "*", Code: hsm.CKRDeviceRemoved})
	deadline := time.Now().Add(20 * time.Second)
	for healthy, _ := n.Service.Healthy(); healthy; healthy, _ = n.Service.Healthy() {
		if time.Now().After(deadline) {
			t.Fatal("the node with a failed HSM still reports itself ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	check("while the HSM is gone")
	n.Faults.Clear()
}

// TestChangeNotMadeWhenItsAnswerWouldNotFit: a 1.x Add or Modify
// Attribute echoes the attribute, which may be a custom one of a 4 KiB
// value; when what is left of the response cannot hold that answer, the
// change is not made (Response Too Large) rather than made and answered
// as failed. With room, it is made and its answer fits.
func TestChangeNotMadeWhenItsAnswerWouldNotFit(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "mysql", authz.RoleUser)
	v := version{1, 2}
	id := ids(c.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(randBytes(t, 32))))[0]
	c.do(v, opAddAttribute, uid(id), attr1("x-small", ttlv.Text(0, "a")))
	big := strings.Repeat("v", 4000)
	small := []ttlv.Item{ttlv.Int(tagMaximumResponseSize, 3000)}
	for _, o := range []op{
		{opAddAttribute, []ttlv.Item{uid(id), attr1("x-big", ttlv.Text(0, big))}},
		{opModifyAttribute, []ttlv.Item{uid(id), attr1("x-small", ttlv.Text(0, big))}},
	} {
		_, rs := c.sendWith(v, small, o)
		if len(rs) != 1 || rs[0].reason != reasonResponseTooLarge {
			t.Fatalf("%s of a 4000-byte value in 3000 bytes: %+v, want Response Too Large", opNames[o.code], rs)
		}
		if got := e.object(t, id).Custom; len(got) != 1 || got["x-small"] != "a" {
			t.Fatalf("after a refused %s, the custom attributes are %d, x-small of %d bytes", opNames[o.code], len(got), len(got["x-small"]))
		}
	}

	// The largest attribute a client may set, with room for its answer.
	name := "x-" + strings.Repeat("n", cluster.MaxKMIPTextLen-2)
	value := strings.Repeat("v", cluster.MaxKMIPCustomValue)
	resp, rs := c.sendWith(v, []ttlv.Item{ttlv.Int(tagMaximumResponseSize, 8000)}, op{opAddAttribute, []ttlv.Item{uid(id), attr1(name, ttlv.Text(0, value))}})
	if len(rs) != 1 || rs[0].status != statusSuccess {
		t.Fatalf("Add Attribute of the largest custom attribute: %+v", rs)
	}
	if b, _ := resp.Encode(); len(b) > 8000 || e.object(t, id).Custom[name] != value {
		t.Fatalf("Add Attribute of the largest custom attribute: a response of %d bytes, stored %v", len(b), e.object(t, id).Custom[name] == value)
	}
}

// TestEmptyLocateClearsThePlaceholder: a Locate that finds nothing leaves
// no ID Placeholder, so an item after it that names no object fails with
// Missing Data, saying why, instead of acting on the object an item
// before the Locate produced.
func TestEmptyLocateClearsThePlaceholder(t *testing.T) {
	e := newEnv(t)
	c := e.dial(t, "mysql", authz.RoleUser)
	for _, v := range []version{{1, 4}, {2, 0}} {
		register := op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(randBytes(t, 32))}}
		nothing := op{opLocate, []ttlv.Item{attr1("Name", nameValue("no-object-has-this-name"))}}
		if v.major >= 2 {
			nothing = op{opLocate, []ttlv.Item{ttlv.Struct(tagAttributes, ttlv.Struct(tagName, ttlv.Text(tagNameValue, "no-object-has-this-name"), ttlv.Enum(tagNameType, nameTypeText)))}}
		}
		_, rs := c.send(v, register, nothing, op{opDestroy, nil})
		if len(rs) != 3 || rs[0].status != statusSuccess || rs[1].status != statusSuccess || len(ids(rs[1].payload)) != 0 {
			t.Fatalf("%s: Register, Locate of nothing: %+v", v, rs)
		}
		if rs[2].status != statusOperationFailed || rs[2].reason != reasonMissingData || !strings.Contains(rs[2].message, "found no object") {
			t.Fatalf("%s: Destroy after a Locate that found nothing: %+v, want Missing Data", v, rs[2])
		}
		e.object(t, ids(rs[0].payload)[0]) // still there
	}
}
