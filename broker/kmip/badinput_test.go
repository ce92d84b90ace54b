package kmip

import (
	"encoding/binary"
	"errors"
	"io"
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
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := ttlv.Decode(b)
		if err != nil {
			return
		}
		_, items, _, _, err := parseRequest(req)
		if err != nil {
			return
		}
		for _, bi := range items {
			p, _ := bi.Child(tagRequestPayload)
			if avs, err := decodeAttributes(p); err == nil {
				var as attrSet
				for _, av := range avs {
					_ = as.apply(av, true)
				}
			}
			_, _ = requestedAttrNames(p)
			for _, tag := range []ttlv.Tag{tagSymmetricKey, tagSecretData} {
				if obj, ok := p.Child(tag); ok {
					_, _, _, _ = material(obj)
				}
			}
			_, _ = requestObjectType(p)
			_, _ = resolveObjectID(p, &batchEnv{})
			_, _ = signingAlgorithm(p)
			_, _ = pairAttrs(p, tagCommonTemplateAttr, tagCommonAttributes)
			_, _ = pairAttrs(p, tagPrivateKeyAttributes, tagPrivateKeyAttributes)
		}
	})
}
