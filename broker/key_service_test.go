package broker_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/hsmtest"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
)

func TestCreateKeyEverySpec(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	cases := []struct {
		spec  pb.KeySpec
		usage pb.KeyUsage
		want  pb.KeyUsage
	}{
		{0, 0, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT},
		{pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT},
		{pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT},
		{pb.KeySpec_KEY_SPEC_RSA_3072, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY},
		{pb.KeySpec_KEY_SPEC_RSA_4096, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT},
		{pb.KeySpec_KEY_SPEC_ECC_NIST_P256, 0, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY},
		{pb.KeySpec_KEY_SPEC_ECC_NIST_P384, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY},
		{pb.KeySpec_KEY_SPEC_ECC_NIST_P521, 0, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY},
		{pb.KeySpec_KEY_SPEC_HMAC_256, 0, pb.KeyUsage_KEY_USAGE_GENERATE_VERIFY_MAC},
		{pb.KeySpec_KEY_SPEC_HMAC_384, 0, pb.KeyUsage_KEY_USAGE_GENERATE_VERIFY_MAC},
		{pb.KeySpec_KEY_SPEC_HMAC_512, 0, pb.KeyUsage_KEY_USAGE_GENERATE_VERIFY_MAC},
	}
	for i, c := range cases {
		alias := fmt.Sprintf("alias/spec-%d", i)
		resp, err := e.keys.CreateKey(ctx, &pb.CreateKeyRequest{KeySpec: c.spec, KeyUsage: c.usage, AliasName: alias,
			Description: "d", Tags: map[string]string{"team": "x"}})
		if err != nil {
			t.Fatalf("%s/%s: %v", c.spec, c.usage, err)
		}
		md := resp.GetKeyMetadata()
		if md.GetKeyUsage() != c.want || md.GetKeyState() != pb.KeyState_KEY_STATE_ENABLED || md.GetCurrentVersion() != 1 ||
			len(md.GetAliasNames()) != 1 || md.GetAliasNames()[0] != alias || md.GetTags()["team"] != "x" ||
			!strings.HasSuffix(md.GetArn(), ":key/"+md.GetKeyId()) || md.GetCreateTime() == nil {
			t.Fatalf("%s: metadata %v", c.spec, md)
		}
		d, err := e.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: alias, ConsistentRead: true})
		if err != nil || d.GetKeyMetadata().GetKeyId() != md.GetKeyId() {
			t.Fatalf("describe by alias: %v", err)
		}
	}

	bad := []struct {
		name string
		req  *pb.CreateKeyRequest
		code codes.Code
		exc  string
		says []string
	}{
		{"no alias", &pb.CreateKeyRequest{}, codes.InvalidArgument, "ValidationException", []string{"AliasName", "required"}},
		{"bad alias", &pb.CreateKeyRequest{AliasName: "demo"}, codes.InvalidArgument, "ValidationException", []string{"alias/"}},
		{"bad alias chars", &pb.CreateKeyRequest{AliasName: "alias/with space"}, codes.InvalidArgument, "ValidationException", []string{"AliasName"}},
		{"reserved alias", &pb.CreateKeyRequest{AliasName: "alias/aws/mine"}, codes.InvalidArgument, "ValidationException", []string{"reserved"}},
		{"duplicate alias", &pb.CreateKeyRequest{AliasName: "alias/spec-0"}, codes.AlreadyExists, "AlreadyExistsException", []string{"alias/spec-0"}},
		{"RSA needs usage", &pb.CreateKeyRequest{KeySpec: pb.KeySpec_KEY_SPEC_RSA_2048, AliasName: "alias/r"}, codes.InvalidArgument, "ValidationException", []string{"KeyUsage"}},
		{"EC cannot encrypt", &pb.CreateKeyRequest{KeySpec: pb.KeySpec_KEY_SPEC_ECC_NIST_P256, KeyUsage: pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT, AliasName: "alias/e"}, codes.InvalidArgument, "ValidationException", []string{"KeyUsage"}},
		{"unknown spec", &pb.CreateKeyRequest{KeySpec: 99, AliasName: "alias/u"}, codes.InvalidArgument, "ValidationException", []string{"KeySpec"}},
		{"long description", &pb.CreateKeyRequest{AliasName: "alias/d", Description: strings.Repeat("x", 8193)}, codes.InvalidArgument, "ValidationException", []string{"Description", "8192"}},
		{"too many tags", &pb.CreateKeyRequest{AliasName: "alias/t", Tags: manyTags(51)}, codes.InvalidArgument, "ValidationException", []string{"50"}},
		{"aws: tag", &pb.CreateKeyRequest{AliasName: "alias/t", Tags: map[string]string{"aws:x": "y"}}, codes.InvalidArgument, "ValidationException", []string{"aws:"}},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.keys.CreateKey(ctx, c.req)
			wantErr(t, err, c.code, c.exc, c.says...)
		})
	}
	l, _ := e.keys.ListKeys(ctx, &pb.ListKeysRequest{PageSize: 1000})
	if len(l.GetKeys()) != len(cases) {
		t.Fatalf("%d keys after %d creates and %d refusals: a refused create left state behind", len(l.GetKeys()), len(cases), len(bad))
	}
}

func manyTags(n int) map[string]string {
	m := map[string]string{}
	for i := 0; i < n; i++ {
		m[fmt.Sprintf("t%d", i)] = "v"
	}
	return m
}

func TestListKeysPagination(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	want := map[string]bool{}
	for i := 0; i < 7; i++ {
		want[e.createKey(pb.KeySpec_KEY_SPEC_HMAC_256, 0).GetKeyId()] = true
	}
	got := map[string]bool{}
	tok, pages := "", 0
	for {
		resp, err := e.keys.ListKeys(ctx, &pb.ListKeysRequest{PageSize: 3, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, k := range resp.GetKeys() {
			if got[k.GetKeyId()] {
				t.Fatalf("key %s listed twice", k.GetKeyId())
			}
			got[k.GetKeyId()] = true
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if len(got) != len(want) || pages != 3 {
		t.Fatalf("listed %d keys in %d pages, want %d in 3", len(got), pages, len(want))
	}
	_, err := e.keys.ListKeys(ctx, &pb.ListKeysRequest{PageToken: "!!!"})
	wantErr(t, err, codes.InvalidArgument, "InvalidMarkerException", "PageToken")
	_, err = e.keys.ListKeys(ctx, &pb.ListKeysRequest{PageSize: 1001})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "PageSize", "1000")
}

// A page token the broker did not issue is refused as InvalidMarker
// naming the field, not read as a position past the end (an empty last
// page, as "garbage" once was); positions of the right kind that name
// nothing any more, such as a deleted key's id, still page on.
func TestPageTokensTheBrokerDidNotIssue(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0).GetKeyId()
	if _, err := e.keys.RotateKey(ctx, &pb.RotateKeyRequest{KeyId: k}); err != nil {
		t.Fatal(err)
	}
	tok := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	// A token the broker issues: the position, a NUL, and the first 8 bytes
	// of the SHA-256 of the request it pages.
	issued := func(scope, pos string) string {
		h := sha256.Sum256([]byte(scope))
		return base64.RawURLEncoding.EncodeToString(append(append([]byte(pos), 0), h[:8]...))
	}
	lists := []struct {
		name  string
		scope string
		list  func(tok string) error
		good  []string // positions of the list's kind
	}{
		{"ListKeys", "ListKeys", func(tok string) error {
			_, err := e.keys.ListKeys(ctx, &pb.ListKeysRequest{PageToken: tok})
			return err
		}, []string{k, "00000000-0000-4000-8000-000000000000"}},
		{"ListAliases", "ListAliases/", func(tok string) error {
			_, err := e.keys.ListAliases(ctx, &pb.ListAliasesRequest{PageToken: tok})
			return err
		}, []string{"alias/zzz", "alias/aws/x"}},
		{"ListKeyVersions", "ListKeyVersions/" + k, func(tok string) error {
			_, err := e.keys.ListKeyVersions(ctx, &pb.ListKeyVersionsRequest{KeyId: k, PageToken: tok})
			return err
		}, []string{"1", "7"}},
		{"ListGrants", "ListGrants\x00" + k + "\x00\x00", func(tok string) error {
			_, err := e.keys.ListGrants(ctx, &pb.ListGrantsRequest{KeyId: k, PageToken: tok})
			return err
		}, []string{strings.Repeat("ab", 32)}},
	}
	bad := []string{
		"garbage",               // the token of the report
		"!!!",                   // not base64url
		"Z2FyYmFnZR",            // tok("garbage") with a stray trailing bit
		tok("garbage"),          // canonical, but no position of any list
		tok(strings.ToUpper(k)), // a key id, but not as the broker writes it
		tok("-1"), tok("0"), tok("01"),
		tok("alias/"), tok("alias/with space"),
		tok(strings.Repeat("AB", 32)), tok(strings.Repeat("ab", 31)),
		tok(strings.Repeat("a", 513)),
	}
	for _, l := range lists {
		t.Run(l.name, func(t *testing.T) {
			for i, b := range bad {
				t.Run(fmt.Sprintf("bad %d", i), func(t *testing.T) {
					wantErr(t, l.list(b), codes.InvalidArgument, "InvalidMarkerException", "invalid PageToken: not a token this service issued")
				})
			}
			for _, g := range l.good {
				if err := l.list(issued(l.scope, g)); err != nil {
					t.Errorf("token of %q: %v", g, err)
				}
				// The same position issued for another request.
				wantErr(t, l.list(issued(l.scope+"/other", g)), codes.InvalidArgument, "InvalidMarkerException", "issued for another request")
			}
		})
	}
}

// TestPageTokensAreBoundToTheirRequest: a token is good only for the
// request that issued it. Before, a ListKeyVersions token of one key, given
// with another key, silently skipped that key's first versions.
func TestPageTokensAreBoundToTheirRequest(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0).GetKeyId()
	b := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0).GetKeyId()
	for _, k := range []string{a, a, b, b} {
		if _, err := e.keys.RotateKey(ctx, &pb.RotateKeyRequest{KeyId: k}); err != nil {
			t.Fatal(err)
		}
	}
	page, err := e.keys.ListKeyVersions(ctx, &pb.ListKeyVersionsRequest{KeyId: a, PageSize: 2})
	if err != nil || page.GetNextPageToken() == "" {
		t.Fatalf("first page of %s: %v %v", a, page, err)
	}
	_, err = e.keys.ListKeyVersions(ctx, &pb.ListKeyVersionsRequest{KeyId: b, PageSize: 2, PageToken: page.GetNextPageToken()})
	wantErr(t, err, codes.InvalidArgument, "InvalidMarkerException", "issued for another request")
	next, err := e.keys.ListKeyVersions(ctx, &pb.ListKeyVersionsRequest{KeyId: a, PageSize: 2, PageToken: page.GetNextPageToken()})
	if err != nil || len(next.GetVersions()) != 1 || next.GetVersions()[0].GetVersion() != 3 {
		t.Fatalf("second page of %s: %v %v", a, next, err)
	}
	if _, err := e.keys.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: "alias/a2", TargetKeyId: a}); err != nil {
		t.Fatal(err)
	}
	aliases, err := e.keys.ListAliases(ctx, &pb.ListAliasesRequest{KeyId: a, PageSize: 1})
	if err != nil || aliases.GetNextPageToken() == "" {
		t.Fatalf("aliases of %s: %v %v", a, aliases, err)
	}
	_, err = e.keys.ListAliases(ctx, &pb.ListAliasesRequest{KeyId: b, PageSize: 1, PageToken: aliases.GetNextPageToken()})
	wantErr(t, err, codes.InvalidArgument, "InvalidMarkerException", "issued for another request")
}

func TestAliasesAndTags(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	b := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	hmac := e.createKey(pb.KeySpec_KEY_SPEC_HMAC_256, 0)

	ca, err := e.keys.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: "alias/app", TargetKeyId: a.GetKeyId()})
	if err != nil || ca.GetAlias().GetTargetKeyId() != a.GetKeyId() || !strings.HasSuffix(ca.GetAlias().GetAliasArn(), ":alias/app") {
		t.Fatalf("create alias: %v %v", ca, err)
	}
	enc, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: "alias/app", Plaintext: []byte("v1")})
	if err != nil || enc.GetKeyId() != a.GetKeyId() {
		t.Fatalf("encrypt via alias: %v", err)
	}
	if _, err := e.keys.UpdateAlias(ctx, &pb.UpdateAliasRequest{AliasName: "alias/app", TargetKeyId: b.GetKeyId()}); err != nil {
		t.Fatal(err)
	}
	enc2, _ := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: "alias/app", Plaintext: []byte("v2")})
	if enc2.GetKeyId() != b.GetKeyId() {
		t.Fatal("alias update did not take effect")
	}
	// Old ciphertexts still decrypt: the blob names its key.
	if _, err := e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()}); err != nil {
		t.Fatal(err)
	}
	_, err = e.keys.UpdateAlias(ctx, &pb.UpdateAliasRequest{AliasName: "alias/app", TargetKeyId: hmac.GetKeyId()})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "TargetKeyId", "same type and usage")
	_, err = e.keys.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: "alias/app", TargetKeyId: a.GetKeyId()})
	wantErr(t, err, codes.AlreadyExists, "AlreadyExistsException", "alias/app")
	_, err = e.keys.UpdateAlias(ctx, &pb.UpdateAliasRequest{AliasName: "alias/nope", TargetKeyId: a.GetKeyId()})
	wantErr(t, err, codes.NotFound, "NotFoundException", "alias/nope")
	_, err = e.keys.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: "alias/aws/x", TargetKeyId: a.GetKeyId()})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "reserved")
	_, err = e.keys.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: "alias/x", TargetKeyId: "alias/nope"})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "TargetKeyId", "not an alias")

	all, err := e.keys.ListAliases(ctx, &pb.ListAliasesRequest{})
	if err != nil || len(all.GetAliases()) != 4 {
		t.Fatalf("list aliases: %d %v", len(all.GetAliases()), err)
	}
	ofB, err := e.keys.ListAliases(ctx, &pb.ListAliasesRequest{KeyId: b.GetKeyId()})
	if err != nil || len(ofB.GetAliases()) != 2 {
		t.Fatalf("aliases of b: %v %v", ofB, err)
	}
	p1, _ := e.keys.ListAliases(ctx, &pb.ListAliasesRequest{PageSize: 3})
	p2, _ := e.keys.ListAliases(ctx, &pb.ListAliasesRequest{PageSize: 3, PageToken: p1.GetNextPageToken()})
	if len(p1.GetAliases()) != 3 || len(p2.GetAliases()) != 1 || p2.GetNextPageToken() != "" {
		t.Fatalf("alias pages %d+%d", len(p1.GetAliases()), len(p2.GetAliases()))
	}
	if _, err := e.keys.DeleteAlias(ctx, &pb.DeleteAliasRequest{AliasName: "alias/app"}); err != nil {
		t.Fatal(err)
	}
	_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: "alias/app", Plaintext: []byte("x")})
	wantErr(t, err, codes.NotFound, "NotFoundException")
	_, err = e.keys.DeleteAlias(ctx, &pb.DeleteAliasRequest{AliasName: "alias/app"})
	wantErr(t, err, codes.NotFound, "NotFoundException")

	if _, err := e.keys.TagKey(ctx, &pb.TagKeyRequest{KeyId: a.GetKeyId(), Tags: map[string]string{"env": "prod", "owner": "me"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.keys.UntagKey(ctx, &pb.UntagKeyRequest{KeyId: a.GetKeyId(), TagKeys: []string{"owner"}}); err != nil {
		t.Fatal(err)
	}
	tags, err := e.keys.ListKeyTags(ctx, &pb.ListKeyTagsRequest{KeyId: a.GetKeyId()})
	if err != nil || len(tags.GetTags()) != 1 || tags.GetTags()["env"] != "prod" {
		t.Fatalf("tags %v %v", tags.GetTags(), err)
	}
	_, err = e.keys.TagKey(ctx, &pb.TagKeyRequest{KeyId: a.GetKeyId(), Tags: manyTags(50)})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "50")
	if _, err := e.keys.UpdateKeyDescription(ctx, &pb.UpdateKeyDescriptionRequest{KeyId: a.GetKeyId(), Description: "new"}); err != nil {
		t.Fatal(err)
	}
	d, _ := e.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: a.GetKeyId()})
	if d.GetKeyMetadata().GetDescription() != "new" {
		t.Fatal("description not updated")
	}
}

// Every change to a key names it by key id or key ARN: an alias, by name
// or ARN, is refused before anything changes, because it can be moved
// between the caller's look and the change (key.proto, "Naming keys").
// Reads and cryptography take aliases. An ARN of another region or
// account names no key here, whatever its key id.
func TestChangesNameKeysByID(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	id := k.GetKeyId()
	if _, err := e.keys.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: "alias/moving", TargetKeyId: id}); err != nil {
		t.Fatal(err)
	}
	const policy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"kms:*","Resource":"*"}]}`
	changes := map[string]func(ref string) error{
		"UpdateKeyDescription": func(ref string) error {
			_, err := e.keys.UpdateKeyDescription(ctx, &pb.UpdateKeyDescriptionRequest{KeyId: ref, Description: "changed"})
			return err
		},
		"DisableKey": func(ref string) error {
			_, err := e.keys.DisableKey(ctx, &pb.DisableKeyRequest{KeyId: ref})
			return err
		},
		"EnableKey": func(ref string) error {
			_, err := e.keys.EnableKey(ctx, &pb.EnableKeyRequest{KeyId: ref})
			return err
		},
		"ScheduleKeyDeletion": func(ref string) error {
			_, err := e.keys.ScheduleKeyDeletion(ctx, &pb.ScheduleKeyDeletionRequest{KeyId: ref, PendingWindowDays: 7})
			return err
		},
		"CancelKeyDeletion": func(ref string) error {
			_, err := e.keys.CancelKeyDeletion(ctx, &pb.CancelKeyDeletionRequest{KeyId: ref})
			return err
		},
		"RotateKey": func(ref string) error {
			_, err := e.keys.RotateKey(ctx, &pb.RotateKeyRequest{KeyId: ref})
			return err
		},
		"TagKey": func(ref string) error {
			_, err := e.keys.TagKey(ctx, &pb.TagKeyRequest{KeyId: ref, Tags: map[string]string{"team": "x"}})
			return err
		},
		"UntagKey": func(ref string) error {
			_, err := e.keys.UntagKey(ctx, &pb.UntagKeyRequest{KeyId: ref, TagKeys: []string{"team"}})
			return err
		},
		"PutKeyPolicy": func(ref string) error {
			_, err := e.keys.PutKeyPolicy(ctx, &pb.PutKeyPolicyRequest{KeyId: ref, Policy: policy})
			return err
		},
		"CreateGrant": func(ref string) error {
			_, err := e.keys.CreateGrant(ctx, &pb.CreateGrantRequest{KeyId: ref, GranteePrincipal: "bob", Operations: []string{"Encrypt"}})
			return err
		},
		"ListAliases": func(ref string) error {
			_, err := e.keys.ListAliases(ctx, &pb.ListAliasesRequest{KeyId: ref})
			return err
		},
	}
	for name, change := range changes {
		for _, ref := range []string{"alias/moving", e.svc.AliasARN("alias/moving")} {
			err := change(ref)
			wantErr(t, err, codes.InvalidArgument, "ValidationException", "KeyId", "not an alias", "alias/moving")
			if t.Failed() {
				t.Fatalf("%s(%s) was not refused", name, ref)
			}
		}
	}
	d, err := e.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: "alias/moving"})
	if err != nil {
		t.Fatal(err)
	}
	if m := d.GetKeyMetadata(); m.GetKeyState() != pb.KeyState_KEY_STATE_ENABLED || m.GetDescription() == "changed" {
		t.Fatalf("a refused change changed the key: %v", m)
	}
	if tags, err := e.keys.ListKeyTags(ctx, &pb.ListKeyTagsRequest{KeyId: "alias/moving"}); err != nil || len(tags.GetTags()) != 0 {
		t.Fatalf("a refused TagKey tagged the key: %v %v", tags.GetTags(), err)
	}
	_, err = e.keys.UpdateAlias(ctx, &pb.UpdateAliasRequest{AliasName: "alias/moving", TargetKeyId: "alias/moving"})
	wantErr(t, err, codes.InvalidArgument, "ValidationException", "TargetKeyId", "not an alias")

	// The same changes by key ARN and by key id work (CancelKeyDeletion
	// leaves the key disabled, as in AWS; the last EnableKey undoes that).
	for _, name := range []string{"UpdateKeyDescription", "TagKey", "UntagKey", "DisableKey", "EnableKey", "RotateKey", "CreateGrant", "ListAliases",
		"ScheduleKeyDeletion", "CancelKeyDeletion", "EnableKey"} {
		ref := e.svc.KeyARN(id)
		if strings.HasSuffix(name, "Deletion") {
			ref = id
		}
		if err := changes[name](ref); err != nil {
			t.Fatalf("%s(%s): %v", name, ref, err)
		}
	}

	// Another partition's, region's or account's ARN names nothing here,
	// for reads, cryptography and changes alike, with or without a key of
	// that id.
	other := strings.Replace(e.svc.KeyARN(id), ":us-east-1:", ":eu-west-1:", 1)
	otherAccount := strings.Replace(e.svc.KeyARN(id), ":000000000000:", ":111122223333:", 1)
	otherAlias := strings.Replace(e.svc.AliasARN("alias/moving"), ":us-east-1:", ":eu-west-1:", 1)
	otherPartition := strings.Replace(e.svc.KeyARN(id), "arn:aws:", "arn:aws-cn:", 1)
	otherPartitionAlias := strings.Replace(e.svc.AliasARN("alias/moving"), "arn:aws:", "arn:aws-us-gov:", 1)
	for _, ref := range []string{other, otherAccount, otherAlias, otherPartition, otherPartitionAlias} {
		_, err = e.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: ref})
		wantErr(t, err, codes.NotFound, "NotFoundException", "region", "account", "us-east-1")
		_, err = e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: ref, Plaintext: []byte("x")})
		wantErr(t, err, codes.NotFound, "NotFoundException")
	}
	_, err = e.keys.DisableKey(ctx, &pb.DisableKeyRequest{KeyId: other})
	wantErr(t, err, codes.NotFound, "NotFoundException", "eu-west-1")
	if d, _ := e.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: id}); d.GetKeyMetadata().GetKeyState() != pb.KeyState_KEY_STATE_ENABLED {
		t.Fatalf("key state after a refused DisableKey: %v", d.GetKeyMetadata().GetKeyState())
	}
}

// A restart of the daemon keeps keys, aliases, states and versions, and
// old ciphertexts decrypt.
func TestRestartKeepsEverything(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	cfg := e.part.Info()
	k := e.createKey(pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT, 0)
	if _, err := e.keys.RotateKey(ctx, &pb.RotateKeyRequest{KeyId: k.GetKeyId()}); err != nil {
		t.Fatal(err)
	}
	enc, err := e.crypto.Encrypt(ctx, &pb.EncryptRequest{KeyId: k.GetKeyId(), Plaintext: []byte("survive")})
	if err != nil {
		t.Fatal(err)
	}
	off := e.createKey(pb.KeySpec_KEY_SPEC_ECC_NIST_P256, 0)
	if _, err := e.keys.DisableKey(ctx, &pb.DisableKeyRequest{KeyId: off.GetKeyId()}); err != nil {
		t.Fatal(err)
	}
	sig := e.createKey(pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY)
	before, err := e.crypto.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: sig.GetKeyId()})
	if err != nil || len(before.GetPublicKey()) == 0 {
		t.Fatalf("public key before restart: %v", err)
	}

	e.restart(e.tokConfig(cfg.Label))
	ctx = ctxT(t)
	dec, err := e.crypto.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()})
	if err != nil || string(dec.GetPlaintext()) != "survive" {
		t.Fatalf("decrypt after restart: %v", err)
	}
	d, err := e.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: k.GetAliasNames()[0]})
	if err != nil || d.GetKeyMetadata().GetCurrentVersion() != 2 {
		t.Fatalf("describe after restart: %v %v", d, err)
	}
	d, err = e.keys.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: off.GetKeyId()})
	if err != nil || d.GetKeyMetadata().GetKeyState() != pb.KeyState_KEY_STATE_DISABLED {
		t.Fatalf("disabled state lost: %v %v", d, err)
	}
	after, err := e.crypto.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: sig.GetKeyId()})
	if err != nil {
		t.Fatalf("public key after restart: %v", err)
	}
	if !bytes.Equal(before.GetPublicKey(), after.GetPublicKey()) {
		t.Fatal("public key changed")
	}
	if _, err := e.crypto.Sign(ctx, &pb.SignRequest{KeyId: sig.GetKeyId(), Message: []byte("m"), SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_256}); err != nil {
		t.Fatalf("sign after restart: %v", err)
	}
}

// TestCreateKeyIsOneCommand: the core's CreateKey replicates a key with
// its alias, tags and policy in one log entry; a request with a policy it
// cannot evaluate is refused before anything is generated or replicated,
// and its alias stays free.
func TestCreateKeyIsOneCommand(t *testing.T) {
	node, svc := newBareNode(t, "node1", hsmtest.NewPartition(t), broker.Config{})
	ctx := broker.Internal(ctxT(t), "test")
	if err := broker.NewDaemon(svc, broker.DaemonConfig{}).EnsureDomainKeyCheck(ctx); err != nil {
		t.Fatal(err)
	}
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*","Resource":"*"}]}`
	before := node.Stats().LastLogIndex
	k, err := svc.CreateKey(ctx, broker.CreateKeyRequest{Alias: "alias/whole", Tags: map[string]string{"team": "a"}, Policy: &policy})
	if err != nil {
		t.Fatal(err)
	}
	if n := node.Stats().LastLogIndex - before; n != 1 {
		t.Fatalf("CreateKey appended %d log entries, want 1", n)
	}
	if id, ok := node.State().ResolveAlias("alias/whole"); !ok || id != k.ID || string(k.Policy) != policy || k.Tags["team"] != "a" {
		t.Fatalf("key %+v, alias -> %q (%v)", k, id, ok)
	}
	got, err := svc.GetKeyPolicy(ctx, broker.GetKeyPolicyRequest{KeyRef: "alias/whole"})
	if err != nil || got.Policy != policy || got.IsDefault {
		t.Fatalf("GetKeyPolicy = %+v, %v", got, err)
	}

	bad := `{"Statement":[{"Effect":"Allow","NotAction":"kms:Decrypt","Principal":"*"}]}`
	before = node.Stats().LastLogIndex
	_, err = svc.CreateKey(ctx, broker.CreateKeyRequest{Alias: "alias/refused", Policy: &bad})
	var be *broker.Error
	if !errors.As(err, &be) || be.Exception != broker.ExcMalformedPolicyDocument {
		t.Fatalf("CreateKey with an unevaluable policy: %v", err)
	}
	if _, ok := node.State().ResolveAlias("alias/refused"); ok || node.Stats().LastLogIndex != before {
		t.Fatal("a refused CreateKey replicated something")
	}
}
