package kmip

import (
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
)

func nested(depth int) ttlv.Item {
	it := ttlv.Int(tagMaximumItems, 1)
	for range depth {
		it = ttlv.Struct(tagAttributes, it)
	}
	return it
}

// Bad input over a real TLS connection: each gets a KMIP error or a closed
// connection, and the replicated state does not change.
func TestBadInputOverTLS(t *testing.T) {
	e := newEnv(t)
	state := e.c.Nodes[0].Raft.State()
	before := state.Digest()
	v := version{1, 4}
	enc := func(it ttlv.Item) []byte {
		b, err := it.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	register := request(v, op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(make([]byte, 16))}})

	// Answered with a KMIP error, connection kept.
	lying := enc(register)
	binary.BigEndian.PutUint32(lying[12:16], 0xFFFF) // the header's length stays true, an inner one lies
	wrongType := request(v)
	wrongType.Children[0].Children[1] = ttlv.Text(tagBatchCount, "1")
	uidInt := request(v, op{opGet, []ttlv.Item{ttlv.Int(tagUniqueIdentifier, 7)}})
	badVersion := request(version{3, 9}, op{opQuery, nil})
	tooManyItems := request(v)
	for range MaxBatch + 1 {
		tooManyItems.Children = append(tooManyItems.Children, ttlv.Struct(tagBatchItem, ttlv.Enum(tagOperation, opQuery), ttlv.Struct(tagRequestPayload)))
	}
	tooManyItems.Children[0].Children[1] = ttlv.Int(tagBatchCount, MaxBatch+1)
	countLies := request(v, op{opQuery, nil}, op{opQuery, nil})
	countLies.Children[0].Children[1] = ttlv.Int(tagBatchCount, 1)
	cases := []struct {
		name   string
		msg    []byte
		reason uint32
	}{
		{"inner length lies", lying, reasonInvalidMessage},
		{"deep nesting", enc(request(v, op{opLocate, []ttlv.Item{nested(ttlv.MaxDepth + 2)}})), reasonInvalidMessage},
		{"batch count is text", enc(wrongType), reasonInvalidMessage},
		{"batch count disagrees", enc(countLies), reasonInvalidMessage},
		{"unknown operation", enc(request(v, op{0x7777, nil})), reasonOperationNotSupported},
		{"unknown object type", enc(request(v, op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, 0x99), symKey(make([]byte, 16))}})), reasonOperationNotSupported},
		{"unknown attribute", enc(request(v, op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey),
			ttlv.Struct(tagTemplateAttribute, attr1("Frobnication", ttlv.Int(0, 1))), symKey(make([]byte, 16))}})), reasonInvalidField},
		{"attribute of the wrong type", enc(request(v, op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey),
			ttlv.Struct(tagTemplateAttribute, attr1("Object Group", ttlv.Int(0, 1))), symKey(make([]byte, 16))}})), reasonInvalidField},
		{"unknown 2.0 attribute tag", enc(request(version{2, 0}, op{opLocate, []ttlv.Item{ttlv.Struct(tagAttributes, ttlv.Int(0x420999, 1))}})), reasonInvalidField},
		{"material too large", enc(request(v, op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(make([]byte, 8192))}})), reasonInvalidField},
		{"unique identifier is an integer", enc(uidInt), reasonInvalidField},
		{"unsupported version", enc(badVersion), reasonInvalidMessage},
		{"too many batch items", enc(tooManyItems), reasonInvalidMessage},
		{"not a request message", enc(ttlv.Struct(tagResponseMessage)), reasonInvalidMessage},
	}
	c := e.dial(t, "app", authz.RoleUser)
	for _, tc := range cases {
		if len(tc.msg) == 0 {
			continue
		}
		resp, err := c.roundTrip(tc.msg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		bi, _ := resp.Child(tagBatchItem)
		st, _ := bi.Child(tagResultStatus)
		r, _ := bi.Child(tagResultReason)
		if st.Int != int64(statusOperationFailed) || uint32(r.Int) != tc.reason {
			t.Errorf("%s: status %d reason %s, want %s", tc.name, st.Int, reasonName(uint32(r.Int)), reasonName(tc.reason))
		}
	}

	// Closed without an answer: a 100 MB length field (refused from the
	// header, before any body is read), a message that is not a structure,
	// and a truncated message followed by the client hanging up.
	closes := map[string][]byte{
		"100 MB length":   {0x42, 0x00, 0x78, 0x01, 0x05, 0xF5, 0xE1, 0x00},
		"not a structure": enc(ttlv.Int(tagRequestMessage, 1)),
		"truncated":       enc(register)[:40],
	}
	for name, b := range closes {
		cc := e.dial(t, "app", authz.RoleUser)
		_ = cc.conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := cc.conn.Write(b); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "truncated" {
			_ = cc.conn.CloseWrite()
		}
		if _, err := ttlv.ReadMessage(cc.conn, 0); !errors.Is(err, io.EOF) {
			t.Errorf("%s: the server answered or hung (%v), want the connection closed", name, err)
		}
	}

	if after := state.Digest(); after != before {
		t.Fatal("bad input changed the replicated state")
	}
	// The server still serves.
	e.dial(t, "app", authz.RoleUser).do(v, opDiscoverVersions)
}

// A client without a certificate from the cluster CA never gets past TLS.
func TestRequiresClientCertificate(t *testing.T) {
	e := newEnv(t)
	cfg := e.c.ClientTLS("app", authz.RoleUser)
	cfg.Certificates = nil
	c := &client{t: t}
	conn, err := tlsDial(e.addr, cfg)
	if err == nil {
		c.conn = conn
		defer conn.Close()
		b, _ := request(version{1, 4}, op{opQuery, nil}).Encode()
		if _, err = c.roundTrip(b); err == nil {
			t.Fatal("a client without a certificate was served")
		}
	}
}

func FuzzHandleParse(f *testing.F) {
	for _, it := range []ttlv.Item{
		request(version{1, 4}, op{opRegister, []ttlv.Item{ttlv.Enum(tagObjectType, objectSymmetricKey),
			ttlv.Struct(tagTemplateAttribute, attr1("Name", nameValue("n")), attr1("Object Group", ttlv.Text(0, "g"))), symKey(make([]byte, 16))}}),
		request(version{2, 0}, op{opLocate, []ttlv.Item{ttlv.Struct(tagAttributes, ttlv.Struct(tagName, ttlv.Text(tagNameValue, "n")))}}),
		request(version{1, 0}, op{opGetAttributes, []ttlv.Item{uid("x"), ttlv.Text(tagAttributeName, "State")}}),
		request(version{2, 0}, op{opCreateKeyPair, []ttlv.Item{ttlv.Struct(tagCommonAttributes, ttlv.Enum(tagCryptographicAlgorithm, 4), ttlv.Int(tagCryptographicLength, 2048)),
			ttlv.Struct(tagPrivateKeyAttributes, ttlv.Int(tagCryptographicUsageMask, 1))}}),
		request(version{1, 2}, op{opSign, []ttlv.Item{uid("x"), ttlv.Struct(tagCryptographicParams, ttlv.Enum(tagDigitalSignatureAlg, dsaRSASSAPSS),
			ttlv.Enum(tagHashingAlgorithm, hashSHA384), ttlv.Int(tagSaltLength, 48)), ttlv.Bytes(tagData, []byte("m"))}}),
	} {
		b, _ := it.Encode()
		f.Add(b)
	}
	// Every refusal of the parsers is a client error with a KMIP reason
	// (never General Failure, which says the server failed), and what they
	// accept is within the limits they promise.
	clientError := func(t *testing.T, what string, err error) {
		t.Helper()
		var oe *opError
		if !errors.As(err, &oe) {
			t.Fatalf("%s: error %v (%T) is not a KMIP result", what, err, err)
		}
		if oe.reason == reasonGeneralFailure || oe.msg == "" {
			t.Fatalf("%s: refused as %s %q, want a client error naming the fault", what, reasonName(oe.reason), oe.msg)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ttlv.Decode(b)
		if err != nil {
			return
		}
		v, items, _, maxResp, err := parseRequest(req)
		if err != nil {
			clientError(t, "parseRequest", err)
			return
		}
		if !v.ok() || len(items) == 0 || len(items) > MaxBatch || maxResp < 0 {
			t.Fatalf("parseRequest accepted version %s, %d items, Maximum Response Size %d", v, len(items), maxResp)
		}
		for _, bi := range items {
			if h := readItem(bi); h.err != nil {
				clientError(t, "readItem", h.err)
			} else if h.batchID != nil && len(h.batchID.Bytes) > 64 {
				t.Fatalf("Unique Batch Item ID of %d bytes accepted", len(h.batchID.Bytes))
			}
			p, _ := bi.Child(tagRequestPayload)
			if avs, err := decodeAttributes(p); err == nil {
				var as attrSet
				for _, av := range avs {
					if err := as.apply(av, false); err != nil {
						clientError(t, "apply", err)
					}
				}
			} else {
				clientError(t, "decodeAttributes", err)
			}
			// Create and Register: the attributes a client may store.
			if as, err := requestAttrs(p); err != nil {
				clientError(t, "requestAttrs", err)
			} else if as.length < 0 || as.length > 1<<16 || as.state != 0 {
				t.Fatalf("requestAttrs accepted length %d, state %d", as.length, as.state)
			}
			if names, err := requestedAttrNames(p); err != nil {
				clientError(t, "requestedAttrNames", err)
			} else if len(names) != len(slices.Compact(slices.Sorted(slices.Values(names)))) {
				t.Fatalf("attribute names %q are not each asked for once", names)
			}
			for _, tag := range []ttlv.Tag{tagSymmetricKey, tagSecretData} {
				if obj, ok := p.Child(tag); ok {
					if _, _, _, err := material(obj); err != nil {
						clientError(t, "material", err)
					}
				}
			}
			if _, err := requestObjectType(p); err != nil {
				clientError(t, "requestObjectType", err)
			}
			if id, err := resolveObjectID(p, &batchEnv{}); err != nil {
				clientError(t, "resolveObjectID", err)
			} else if id == "" || len(id) > maxUniqueIDLen {
				t.Fatalf("resolveObjectID accepted %q", id)
			}
			if _, err := signingAlgorithm(p); err != nil {
				clientError(t, "signingAlgorithm", err)
			}
			for _, g := range [][2]ttlv.Tag{{tagCommonTemplateAttr, tagCommonAttributes},
				{tagPrivateKeyTemplateAttr, tagPrivateKeyAttributes}, {tagPublicKeyTemplateAttr, tagPublicKeyAttributes}} {
				if _, err := pairAttrs(p, g[0], g[1]); err != nil {
					clientError(t, "pairAttrs", err)
				}
			}
			// Answers that do not grow with the request: each version
			// and each Query Function once, however often asked.
			if out, err := discoverVersions(p); err != nil || len(out.Children) > len(supported) {
				t.Fatalf("Discover Versions: %d versions, %v", len(out.Children), err)
			}
			if out, err := query(p); err != nil {
				clientError(t, "query", err)
			} else if out.Size() > 1024 {
				t.Fatalf("Query answer of %d bytes", out.Size())
			}
		}
	})
}
