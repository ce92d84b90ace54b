package kmip

import (
	"strconv"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
)

// repeats is how often the tests below repeat one entry of a request's
// list: as many as a message may carry beside its header and one item.
const repeats = ttlv.MaxItems - 10

// TestRepeatedRequestListsAnswerOnce: a request that names the same Query
// Function, Protocol Version or attribute thousands of times gets the
// answer of naming each once: the answer holds as many entries as the
// request names distinct ones, not one set per repeat, so a small request
// cannot make the server build an answer many times its size.
func TestRepeatedRequestListsAnswerOnce(t *testing.T) {
	e := newEnv(t)
	v := version{1, 4}

	// Query, which every role may ask, the auditor included.
	auditor := e.dial(t, "watcher", authz.RoleAuditor)
	var fns []ttlv.Item
	for i := range repeats {
		fns = append(fns, ttlv.Enum(tagQueryFunction, []uint32{queryOperations, queryObjects, queryServerInfo}[i%3]))
	}
	once := auditor.do(v, opQuery, ttlv.Enum(tagQueryFunction, queryOperations), ttlv.Enum(tagQueryFunction, queryObjects), ttlv.Enum(tagQueryFunction, queryServerInfo))
	_, rs := auditor.send(v, op{opQuery, fns})
	if len(rs) != 1 || rs[0].status != statusSuccess {
		t.Fatalf("Query of %d functions: %+v", repeats, rs)
	}
	if got, want := len(rs[0].payload.Children), len(once.Children); got != want || want != len(opNames)+5 {
		t.Fatalf("Query of 3 functions repeated: %d entries, want %d (%d operations, 4 object types, the vendor)", got, want, len(opNames))
	}

	// Discover Versions: each version the server speaks is answered once.
	var vs []ttlv.Item
	for range repeats / 3 {
		vs = append(vs, version{1, 0}.item())
	}
	_, rs = auditor.send(v, op{opDiscoverVersions, vs})
	if len(rs) != 1 || rs[0].status != statusSuccess || len(rs[0].payload.Children) != 1 {
		t.Fatalf("Discover Versions of 1.0 repeated %d times: %d versions answered, want 1 (%+v)", repeats/3, len(rs[0].payload.Children), rs[0].status)
	}

	// Get Attributes: an object of 16 names of 1000 bytes; "Name" asked
	// for thousands of times answers the 16 names once.
	u := e.dial(t, "app", authz.RoleUser)
	var tmpl []ttlv.Item
	for i := range 16 {
		tmpl = append(tmpl, attr1("Name", nameValue(strconv.Itoa(i)+strings.Repeat("n", 998))))
	}
	id := ids(u.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), ttlv.Struct(tagTemplateAttribute, tmpl...), symKey(randBytes(t, 32))))[0]
	names := []ttlv.Item{uid(id)}
	refs := []ttlv.Item{uid(id)}
	for range repeats {
		names = append(names, ttlv.Text(tagAttributeName, "Name"))
		refs = append(refs, ttlv.Enum(tagAttributeReference, uint32(tagName)))
	}
	_, rs = u.send(v, op{opGetAttributes, names})
	if len(rs) != 1 || rs[0].status != statusSuccess {
		t.Fatalf("Get Attributes of Name repeated %d times: %+v", repeats, rs)
	}
	if got := len(rs[0].payload.ChildrenOf(tagAttribute)); got != 16 {
		t.Fatalf("Get Attributes of Name repeated: %d attributes, want the 16 names", got)
	}
	_, rs = u.send(version{2, 0}, op{opGetAttributes, refs})
	if len(rs) != 1 || rs[0].status != statusSuccess {
		t.Fatalf("2.0 Get Attributes of Name repeated %d times: %+v", repeats, rs)
	}
	if as, _ := rs[0].payload.Child(tagAttributes); len(as.ChildrenOf(tagName)) != 16 || len(as.Children) != 16 {
		t.Fatalf("2.0 Get Attributes of Name repeated: %d attributes, want the 16 names", len(as.Children))
	}

	// With less room than the 16 names take, Response Too Large.
	_, rs = u.sendWith(v, []ttlv.Item{ttlv.Int(tagMaximumResponseSize, 8000)}, op{opGetAttributes, names[:100]})
	if len(rs) != 1 || rs[0].reason != reasonResponseTooLarge {
		t.Fatalf("Get Attributes of 16 KB of names in 8000 bytes: %+v", rs)
	}
}
