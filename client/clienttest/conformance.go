package clienttest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestBroker is the conformance suite of the broker's gRPC API as the SDK
// (package client) and hsmctl use it: every call their tests make, with
// the answers, error codes, AWS exception names and messages a client can
// see. It runs against a Fake (so that the SDK and CLI unit tests test
// against the broker's behaviour) and against a real in-process broker
// (SoftHSM token, Raft, gRPC over mutual TLS); both must pass it. conn must
// reach the broker as an admin. The suite creates its own keys and aliases
// under a random prefix and schedules none it does not make; it does not
// need an empty broker.
//
// Ciphertext stays opaque: the suite never reads a blob, it only checks
// that Decrypt answers every altered blob, wrong context or wrong key as
// the broker does.
func TestBroker(t *testing.T, conn grpc.ClientConnInterface) {
	s := &suite{
		kc:     pb.NewKeyServiceClient(conn),
		cc:     pb.NewCryptoServiceClient(conn),
		cl:     pb.NewClusterServiceClient(conn),
		prefix: "alias/conformance-" + hex.EncodeToString(randomBytes(4)),
	}
	t.Run("Keys", s.testKeys)
	t.Run("KeyErrors", s.testKeyErrors)
	t.Run("Aliases", s.testAliases)
	t.Run("Pagination", s.testPagination)
	t.Run("States", s.testStates)
	t.Run("Tags", s.testTags)
	t.Run("Ciphertext", s.testCiphertext)
	t.Run("Limits", s.testLimits)
	t.Run("DataKeys", s.testDataKeys)
	t.Run("RSA", s.testRSA)
	t.Run("SignVerify", s.testSignVerify)
	t.Run("Mac", s.testMac)
	t.Run("Cluster", s.testCluster)
}

type suite struct {
	kc     pb.KeyServiceClient
	cc     pb.CryptoServiceClient
	cl     pb.ClusterServiceClient
	prefix string
	n      int
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// alias returns a fresh alias name under the suite's prefix.
func (s *suite) alias(name string) string {
	s.n++
	return fmt.Sprintf("%s-%s-%d", s.prefix, name, s.n)
}

// create makes a key and fails the test if it cannot.
func (s *suite) create(t *testing.T, spec pb.KeySpec, usage pb.KeyUsage) *pb.KeyMetadata {
	t.Helper()
	resp, err := s.kc.CreateKey(ctxOf(t), &pb.CreateKeyRequest{AliasName: s.alias("key"), KeySpec: spec, KeyUsage: usage})
	if err != nil {
		t.Fatalf("CreateKey %s %s: %v", spec, usage, err)
	}
	return resp.GetKeyMetadata()
}

func (s *suite) symmetric(t *testing.T) string {
	t.Helper()
	return s.create(t, 0, 0).GetKeyId()
}

func (s *suite) describe(t *testing.T, ref string) *pb.KeyMetadata {
	t.Helper()
	resp, err := s.kc.DescribeKey(ctxOf(t), &pb.DescribeKeyRequest{KeyId: ref})
	if err != nil {
		t.Fatalf("DescribeKey %s: %v", ref, err)
	}
	return resp.GetKeyMetadata()
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// wantErr checks an error's gRPC code, the AWS exception name in its
// ErrorInfo, and its message: equal to msg, or, if msg ends in "...",
// starting with what comes before.
func wantErr(t *testing.T, what string, err error, code codes.Code, exception, msg string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error; want %v %s %q", what, code, exception, msg)
		return
	}
	st, _ := status.FromError(err)
	var reason string
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.GetReason()
		}
	}
	okMsg := st.Message() == msg
	if p, ok := strings.CutSuffix(msg, "..."); ok {
		okMsg = strings.HasPrefix(st.Message(), p)
	}
	if st.Code() != code || reason != exception || !okMsg {
		t.Errorf("%s:\n got %v %s %q\nwant %v %s %q", what, st.Code(), reason, st.Message(), code, exception, msg)
	}
}

// wantInvalid checks a ValidationException whose message is err's, an error
// of package keys that names the field and limit.
func wantInvalid(t *testing.T, what string, got error, want error) {
	t.Helper()
	if want == nil {
		t.Fatalf("%s: the expected error is nil", what)
	}
	exc := "ValidationException"
	if errors.Is(want, keys.ErrInvalidKeyUsage) {
		exc = "InvalidKeyUsageException"
	}
	wantErr(t, what, got, codes.InvalidArgument, exc, want.Error())
}

func fieldErr(field, format string, args ...any) error {
	return &keys.FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

func (s *suite) testKeys(t *testing.T) {
	ctx := ctxOf(t)
	name := s.alias("sym")
	resp, err := s.kc.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: name, Description: "conformance", Tags: map[string]string{"team": "a"}})
	must(t, "CreateKey", err)
	m := resp.GetKeyMetadata()
	id := m.GetKeyId()
	if b, err := keys.ParseKeyID(id); err != nil || keys.FormatKeyID(b) != id {
		t.Errorf("key id %q is not a canonical UUID", id)
	}
	if m.GetKeySpec() != pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT || m.GetKeyUsage() != pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT ||
		m.GetKeyState() != pb.KeyState_KEY_STATE_ENABLED || m.GetCurrentVersion() != 1 || m.GetDescription() != "conformance" ||
		!slices.Equal(m.GetAliasNames(), []string{name}) || m.GetTags()["team"] != "a" || m.GetCreateTime() == nil ||
		!slices.Equal(m.GetEncryptionAlgorithms(), []pb.EncryptionAlgorithm{pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_SYMMETRIC_DEFAULT}) ||
		len(m.GetSigningAlgorithms())+len(m.GetMacAlgorithms()) != 0 || m.GetDeletionDate() != nil {
		t.Errorf("CreateKey default metadata: %v", m)
	}
	if !strings.HasPrefix(m.GetArn(), "arn:aws:kms:") || !strings.HasSuffix(m.GetArn(), ":key/"+id) {
		t.Errorf("key ARN %q", m.GetArn())
	}
	aliasARN := strings.TrimSuffix(m.GetArn(), "key/"+id) + name
	for _, ref := range []string{id, strings.ToUpper(id), m.GetArn(), name, aliasARN} {
		if got := s.describe(t, ref); got.GetKeyId() != id {
			t.Errorf("DescribeKey %q: key %s, want %s", ref, got.GetKeyId(), id)
		}
	}
	// A change names its key by key id or key ARN, never by an alias that
	// could have been moved; an ARN of another region or account names
	// nothing here.
	for _, ref := range []string{name, aliasARN} {
		_, err = s.kc.UpdateKeyDescription(ctx, &pb.UpdateKeyDescriptionRequest{KeyId: ref, Description: "through an alias"})
		wantInvalid(t, "UpdateKeyDescription by alias "+ref, err, keys.AliasNotAllowed("KeyId", name))
		_, err = s.kc.DisableKey(ctx, &pb.DisableKeyRequest{KeyId: ref})
		wantInvalid(t, "DisableKey by alias "+ref, err, keys.AliasNotAllowed("KeyId", name))
	}
	foreign := strings.Replace(m.GetArn(), ":kms:", ":kms:xx-", 1)
	fr, _ := keys.ParseKeyRef(foreign)
	own, _ := keys.ParseKeyRef(m.GetArn())
	_, err = s.kc.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: foreign})
	wantErr(t, "DescribeKey by another region's ARN", err, codes.NotFound, "NotFoundException", fr.OtherCluster("KeyId", own.Region, own.Account))
	_, err = s.kc.UpdateKeyDescription(ctx, &pb.UpdateKeyDescriptionRequest{KeyId: m.GetArn(), Description: "new words"})
	must(t, "UpdateKeyDescription", err)
	if got := s.describe(t, id); got.GetDescription() != "new words" || got.GetKeyState() != pb.KeyState_KEY_STATE_ENABLED {
		t.Errorf("description after update: %q, state %v", got.GetDescription(), got.GetKeyState())
	}

	for _, tt := range []struct {
		spec  pb.KeySpec
		usage pb.KeyUsage
		sign  []pb.SigningAlgorithm
		mac   []pb.MacAlgorithm
	}{
		{pb.KeySpec_KEY_SPEC_ECC_NIST_P256, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY, []pb.SigningAlgorithm{pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256}, nil},
		{pb.KeySpec_KEY_SPEC_ECC_NIST_P384, pb.KeyUsage_KEY_USAGE_SIGN_VERIFY, []pb.SigningAlgorithm{pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_384}, nil},
		{pb.KeySpec_KEY_SPEC_HMAC_256, pb.KeyUsage_KEY_USAGE_GENERATE_VERIFY_MAC, nil, []pb.MacAlgorithm{pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_256}},
		{pb.KeySpec_KEY_SPEC_HMAC_512, pb.KeyUsage_KEY_USAGE_GENERATE_VERIFY_MAC, nil, []pb.MacAlgorithm{pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_512}},
	} {
		m := s.create(t, tt.spec, 0) // the spec's default usage
		if m.GetKeySpec() != tt.spec || m.GetKeyUsage() != tt.usage || !slices.Equal(m.GetSigningAlgorithms(), tt.sign) ||
			!slices.Equal(m.GetMacAlgorithms(), tt.mac) || len(m.GetEncryptionAlgorithms()) != 0 {
			t.Errorf("CreateKey %s: %v", tt.spec, m)
		}
	}
}

func (s *suite) testKeyErrors(t *testing.T) {
	ctx := ctxOf(t)
	id := s.symmetric(t)
	taken := s.describe(t, id).GetAliasNames()[0]
	_, err := s.kc.CreateKey(ctx, &pb.CreateKeyRequest{})
	wantInvalid(t, "CreateKey without alias", err, fieldErr("AliasName", "is required: every key is created with an alias (alias/NAME)"))
	_, err = s.kc.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: taken})
	wantErr(t, "CreateKey with a taken alias", err, codes.AlreadyExists, "AlreadyExistsException", "alias "+taken+" already exists")
	_, want := keys.ValidateCreate(keys.SpecECCNISTP256, keys.UsageEncryptDecrypt)
	_, err = s.kc.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: s.alias("x"), KeySpec: pb.KeySpec_KEY_SPEC_ECC_NIST_P256, KeyUsage: pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT})
	wantInvalid(t, "CreateKey ECC for encryption", err, want)
	_, want = keys.ValidateCreate(keys.SpecRSA2048, "")
	_, err = s.kc.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: s.alias("x"), KeySpec: pb.KeySpec_KEY_SPEC_RSA_2048})
	wantInvalid(t, "CreateKey RSA without a usage", err, want)
	_, err = s.kc.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: s.alias("x"), KeySpec: 999})
	wantInvalid(t, "CreateKey unknown spec", err, fieldErr("KeySpec", "%q is not a supported key spec", "UNKNOWN_999"))
	_, err = s.kc.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: s.alias("x"), Description: strings.Repeat("d", keys.MaxDescription+1)})
	wantInvalid(t, "CreateKey long description", err, keys.ValidateDescription(strings.Repeat("d", keys.MaxDescription+1)))
	_, err = s.kc.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: s.alias("x"), Tags: map[string]string{"aws:x": "1"}})
	wantInvalid(t, "CreateKey reserved tag", err, keys.ValidateTags(map[string]string{"aws:x": "1"}))
	_, err = s.kc.CreateKey(ctx, &pb.CreateKeyRequest{AliasName: "alias/aws/x"})
	wantInvalid(t, "CreateKey reserved alias", err, keys.ValidateAliasName("alias/aws/x"))

	unknown := keys.NewKeyID()
	_, err = s.kc.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: unknown})
	wantErr(t, "DescribeKey unknown id", err, codes.NotFound, "NotFoundException", "key "+unknown+" does not exist")
	_, err = s.kc.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: s.prefix + "-none"})
	wantErr(t, "DescribeKey unknown alias", err, codes.NotFound, "NotFoundException", "alias "+s.prefix+"-none does not exist")
	_, err = s.kc.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: "not-a-key"})
	wantInvalid(t, "DescribeKey malformed id", err, fieldErr("KeyId", "must be a key id, key ARN, alias name or alias ARN"))
	_, err = s.kc.DescribeKey(ctx, &pb.DescribeKeyRequest{})
	wantInvalid(t, "DescribeKey without id", err, fieldErr("KeyId", "is required"))
	_, perr := keys.ParseKeyRef("arn:aws:s3:::bucket")
	_, err = s.kc.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: "arn:aws:s3:::bucket"})
	wantInvalid(t, "DescribeKey foreign ARN", err, perr)
	_, err = s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: unknown, Plaintext: []byte("x")})
	wantErr(t, "Encrypt unknown key", err, codes.NotFound, "NotFoundException", "key "+unknown+" does not exist")
	_, err = s.kc.EnableKey(ctx, &pb.EnableKeyRequest{KeyId: unknown})
	wantErr(t, "EnableKey unknown key", err, codes.NotFound, "NotFoundException", "key "+unknown+" does not exist")
	_, err = s.kc.RotateKey(ctx, &pb.RotateKeyRequest{KeyId: unknown})
	wantErr(t, "RotateKey unknown key", err, codes.NotFound, "NotFoundException", "key "+unknown+" does not exist")
	_, err = s.kc.ListKeyTags(ctx, &pb.ListKeyTagsRequest{KeyId: unknown})
	wantErr(t, "ListKeyTags unknown key", err, codes.NotFound, "NotFoundException", "key "+unknown+" does not exist")
	_, err = s.cc.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: id})
	wantErr(t, "GetPublicKey of a symmetric key", err, codes.FailedPrecondition, "UnsupportedOperationException", "key "+id+" is SYMMETRIC_DEFAULT and has no public key")
}

func (s *suite) testAliases(t *testing.T) {
	ctx := ctxOf(t)
	k1, k2 := s.symmetric(t), s.symmetric(t)
	ec := s.create(t, pb.KeySpec_KEY_SPEC_ECC_NIST_P256, 0).GetKeyId()
	name := s.alias("extra")
	resp, err := s.kc.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: name, TargetKeyId: k1})
	must(t, "CreateAlias", err)
	if a := resp.GetAlias(); a.GetAliasName() != name || a.GetTargetKeyId() != k1 || !strings.HasSuffix(a.GetAliasArn(), ":"+name) ||
		!strings.HasPrefix(a.GetAliasArn(), "arn:aws:kms:") || a.GetCreateTime() == nil {
		t.Errorf("CreateAlias: %v", a)
	}
	if got := s.describe(t, k1).GetAliasNames(); len(got) != 2 || !slices.IsSorted(got) || !slices.Contains(got, name) {
		t.Errorf("aliases of the key: %v", got)
	}
	_, err = s.kc.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: name, TargetKeyId: k2})
	wantErr(t, "CreateAlias taken", err, codes.AlreadyExists, "AlreadyExistsException", "alias "+name+" already exists")
	for _, bad := range []string{"alias/aws/mine", "noprefix", "alias/", "alias/with space", "alias/" + strings.Repeat("a", keys.MaxAliasName)} {
		_, err = s.kc.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: bad, TargetKeyId: k2})
		wantInvalid(t, fmt.Sprintf("CreateAlias %.20q", bad), err, keys.ValidateAliasName(bad))
	}
	unknown := keys.NewKeyID()
	_, err = s.kc.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: s.alias("x"), TargetKeyId: unknown})
	wantErr(t, "CreateAlias to an unknown key", err, codes.NotFound, "NotFoundException", "key "+unknown+" does not exist")
	_, err = s.kc.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: s.alias("x")})
	wantInvalid(t, "CreateAlias without a key", err, fieldErr("TargetKeyId", "is required"))

	up, err := s.kc.UpdateAlias(ctx, &pb.UpdateAliasRequest{AliasName: name, TargetKeyId: k2})
	must(t, "UpdateAlias", err)
	if up.GetAlias().GetTargetKeyId() != k2 {
		t.Errorf("UpdateAlias: %v", up.GetAlias())
	}
	enc, err := s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: name, Plaintext: []byte("x")})
	if err != nil || enc.GetKeyId() != k2 {
		t.Errorf("Encrypt through the updated alias: key %s, %v; want %s", enc.GetKeyId(), err, k2)
	}
	_, err = s.kc.UpdateAlias(ctx, &pb.UpdateAliasRequest{AliasName: name, TargetKeyId: ec})
	wantErr(t, "UpdateAlias to another kind of key", err, codes.InvalidArgument, "ValidationException", "invalid TargetKeyId: key "+ec+" (ECC_NIST_P256, SIGN_VERIFY) is not the same type...")
	_, err = s.kc.UpdateAlias(ctx, &pb.UpdateAliasRequest{AliasName: s.prefix + "-none", TargetKeyId: k2})
	wantErr(t, "UpdateAlias unknown", err, codes.NotFound, "NotFoundException", "alias "+s.prefix+"-none does not exist")
	_, err = s.kc.DeleteAlias(ctx, &pb.DeleteAliasRequest{AliasName: name})
	must(t, "DeleteAlias", err)
	_, err = s.kc.DeleteAlias(ctx, &pb.DeleteAliasRequest{AliasName: name})
	wantErr(t, "DeleteAlias twice", err, codes.NotFound, "NotFoundException", "alias "+name+" does not exist")
	_, err = s.kc.DeleteAlias(ctx, &pb.DeleteAliasRequest{AliasName: "bad"})
	wantInvalid(t, "DeleteAlias malformed", err, keys.ValidateAliasName("bad"))
	_, err = s.kc.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: name})
	wantErr(t, "DescribeKey by a deleted alias", err, codes.NotFound, "NotFoundException", "alias "+name+" does not exist")
	if got := s.describe(t, k2); got.GetKeyState() != pb.KeyState_KEY_STATE_ENABLED || len(got.GetAliasNames()) != 1 {
		t.Errorf("key after its extra alias is deleted: %v", got)
	}
}

func (s *suite) testPagination(t *testing.T) {
	ctx := ctxOf(t)
	// Aliases of one key: page tokens survive a name inserted before them.
	k := s.symmetric(t)
	base := s.alias("page")
	for _, n := range []string{"b", "c", "d"} {
		_, err := s.kc.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: base + "-" + n, TargetKeyId: k})
		must(t, "CreateAlias", err)
	}
	names := func(as []*pb.Alias) (out []string) {
		for _, a := range as {
			out = append(out, strings.TrimPrefix(a.GetAliasName(), base+"-"))
		}
		return out
	}
	// The key's own alias (prefix-key-N) sorts before base (prefix-page-N).
	p1, err := s.kc.ListAliases(ctx, &pb.ListAliasesRequest{KeyId: k, PageSize: 3})
	must(t, "ListAliases", err)
	if got := names(p1.GetAliases()); len(got) != 3 || got[1] != "b" || got[2] != "c" || p1.GetNextPageToken() == "" {
		t.Fatalf("first page of aliases: %v, token %q", got, p1.GetNextPageToken())
	}
	_, err = s.kc.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: base + "-a", TargetKeyId: k})
	must(t, "CreateAlias", err)
	p2, err := s.kc.ListAliases(ctx, &pb.ListAliasesRequest{KeyId: k, PageSize: 3, PageToken: p1.GetNextPageToken()})
	must(t, "ListAliases page 2", err)
	if got := names(p2.GetAliases()); !slices.Equal(got, []string{"d"}) || p2.GetNextPageToken() != "" {
		t.Errorf("after an alias sorting before the token was added, the next page is %v, token %q; want [d] and no token", got, p2.GetNextPageToken())
	}
	full, err := s.kc.ListAliases(ctx, &pb.ListAliasesRequest{KeyId: k, PageSize: 5})
	if err != nil || len(full.GetAliases()) != 5 || full.GetNextPageToken() != "" {
		t.Errorf("a last page that is exactly full: %d aliases, token %q, %v", len(full.GetAliases()), full.GetNextPageToken(), err)
	}
	def, err := s.kc.ListAliases(ctx, &pb.ListAliasesRequest{KeyId: k})
	if err != nil || len(def.GetAliases()) != 5 || def.GetNextPageToken() != "" {
		t.Errorf("default page size: %d aliases, token %q, %v", len(def.GetAliases()), def.GetNextPageToken(), err)
	}

	// Every key, two at a time: in key id order, each once, a token on
	// every page but the last.
	existing := []string{s.symmetric(t), s.symmetric(t), k}
	var ids []string
	var added, cursor string
	tok := ""
	for pages := 0; ; pages++ {
		resp, err := s.kc.ListKeys(ctx, &pb.ListKeysRequest{PageSize: 2, PageToken: tok})
		must(t, "ListKeys", err)
		for _, m := range resp.GetKeys() {
			ids = append(ids, m.GetKeyId())
		}
		tok = resp.GetNextPageToken()
		if tok == "" {
			break
		}
		if len(resp.GetKeys()) != 2 {
			t.Errorf("ListKeys page %d has %d keys and a next token", pages, len(resp.GetKeys()))
		}
		if pages > 10000 {
			t.Fatal("ListKeys never ends")
		}
		if pages == 0 {
			added, cursor = s.symmetric(t), ids[len(ids)-1] // a key made mid-listing
		}
	}
	if !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != len(ids) {
		t.Errorf("ListKeys pages are not in key id order, each key once: %v", ids)
	}
	for _, id := range existing {
		if !slices.Contains(ids, id) {
			t.Errorf("ListKeys missed key %s", id)
		}
	}
	if added != "" && slices.Contains(ids, added) != (added > cursor) {
		t.Errorf("key %s made after a page ending at %s: listed %v", added, cursor, slices.Contains(ids, added))
	}
	all, err := s.kc.ListKeys(ctx, &pb.ListKeysRequest{PageSize: keys.MaxPageSize})
	if err != nil || len(all.GetKeys()) < len(existing) {
		t.Errorf("ListKeys at the largest page size: %d keys, %v", len(all.GetKeys()), err)
	}

	// Key versions.
	for range 2 {
		_, err := s.kc.RotateKey(ctx, &pb.RotateKeyRequest{KeyId: k})
		must(t, "RotateKey", err)
	}
	v1, err := s.kc.ListKeyVersions(ctx, &pb.ListKeyVersionsRequest{KeyId: k, PageSize: 2})
	must(t, "ListKeyVersions", err)
	v2, err := s.kc.ListKeyVersions(ctx, &pb.ListKeyVersionsRequest{KeyId: k, PageSize: 2, PageToken: v1.GetNextPageToken()})
	must(t, "ListKeyVersions page 2", err)
	vs := append(v1.GetVersions(), v2.GetVersions()...)
	if len(v1.GetVersions()) != 2 || v1.GetNextPageToken() == "" || len(v2.GetVersions()) != 1 || v2.GetNextPageToken() != "" ||
		vs[0].GetVersion() != 1 || vs[2].GetVersion() != 3 || !vs[2].GetCurrent() || vs[0].GetCurrent() || vs[1].GetCurrent() {
		t.Errorf("ListKeyVersions pages: %v then %v", v1, v2)
	}

	// Bad page sizes and tokens.
	for _, size := range []int32{-1, keys.MaxPageSize + 1} {
		want := fieldErr("PageSize", "must be 1 to %d, got %d", keys.MaxPageSize, size)
		_, err := s.kc.ListKeys(ctx, &pb.ListKeysRequest{PageSize: size})
		wantInvalid(t, fmt.Sprintf("ListKeys page size %d", size), err, want)
		_, err = s.kc.ListAliases(ctx, &pb.ListAliasesRequest{PageSize: size})
		wantInvalid(t, fmt.Sprintf("ListAliases page size %d", size), err, want)
		_, err = s.kc.ListKeyVersions(ctx, &pb.ListKeyVersionsRequest{KeyId: k, PageSize: size})
		wantInvalid(t, fmt.Sprintf("ListKeyVersions page size %d", size), err, want)
	}
	const badToken = "invalid PageToken: not a token this service issued"
	// Tokens the broker never issues: not base64, or base64 of no position
	// (what "garbage" decodes to, "0").
	for _, tok := range []string{"!", "not base64?", "garbage", base64.RawURLEncoding.EncodeToString([]byte("0"))} {
		_, err := s.kc.ListKeys(ctx, &pb.ListKeysRequest{PageToken: tok})
		wantErr(t, "ListKeys bad token "+tok, err, codes.InvalidArgument, "InvalidMarkerException", badToken)
		_, err = s.kc.ListAliases(ctx, &pb.ListAliasesRequest{PageToken: tok})
		wantErr(t, "ListAliases bad token "+tok, err, codes.InvalidArgument, "InvalidMarkerException", badToken)
		_, err = s.kc.ListKeyVersions(ctx, &pb.ListKeyVersionsRequest{KeyId: k, PageToken: tok})
		wantErr(t, "ListKeyVersions bad token "+tok, err, codes.InvalidArgument, "InvalidMarkerException", badToken)
	}
}

func (s *suite) testStates(t *testing.T) {
	ctx := ctxOf(t)
	id := s.symmetric(t)
	ec := s.create(t, pb.KeySpec_KEY_SPEC_ECC_NIST_P256, 0).GetKeyId()
	enc, err := s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("before")})
	must(t, "Encrypt", err)

	for _, k := range []string{id, ec} {
		_, err := s.kc.DisableKey(ctx, &pb.DisableKeyRequest{KeyId: k})
		must(t, "DisableKey", err)
		if st := s.describe(t, k).GetKeyState(); st != pb.KeyState_KEY_STATE_DISABLED {
			t.Errorf("state after DisableKey: %v", st)
		}
	}
	disabled := func(k string) string { return "key " + k + " is disabled" }
	_, err = s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("x")})
	wantErr(t, "Encrypt disabled", err, codes.FailedPrecondition, "DisabledException", disabled(id))
	_, err = s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()})
	wantErr(t, "Decrypt disabled", err, codes.FailedPrecondition, "DisabledException", disabled(id))
	_, err = s.cc.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: id, KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256})
	wantErr(t, "GenerateDataKey disabled", err, codes.FailedPrecondition, "DisabledException", disabled(id))
	_, err = s.kc.RotateKey(ctx, &pb.RotateKeyRequest{KeyId: id})
	wantErr(t, "RotateKey disabled", err, codes.FailedPrecondition, "DisabledException", disabled(id))
	_, err = s.cc.Sign(ctx, &pb.SignRequest{KeyId: ec, Message: []byte("m"), SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256})
	wantErr(t, "Sign disabled", err, codes.FailedPrecondition, "DisabledException", disabled(ec))
	_, err = s.cc.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: ec})
	wantErr(t, "GetPublicKey disabled", err, codes.FailedPrecondition, "DisabledException", disabled(ec))
	if got := s.describe(t, id); got.GetKeyId() != id {
		t.Errorf("DescribeKey of a disabled key: %v", got)
	}
	_, err = s.kc.EnableKey(ctx, &pb.EnableKeyRequest{KeyId: id})
	must(t, "EnableKey", err)
	if dec, err := s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()}); err != nil || string(dec.GetPlaintext()) != "before" {
		t.Errorf("Decrypt after EnableKey: %v", err)
	}

	for _, days := range []uint32{3, 31, 5000} {
		_, err := s.kc.ScheduleKeyDeletion(ctx, &pb.ScheduleKeyDeletionRequest{KeyId: id, PendingWindowDays: days})
		wantInvalid(t, fmt.Sprintf("ScheduleKeyDeletion %d days", days), err, fieldErr("PendingWindowDays", "must be 7 to 30 days, got %d", days))
	}
	before := time.Now()
	del, err := s.kc.ScheduleKeyDeletion(ctx, &pb.ScheduleKeyDeletionRequest{KeyId: id, PendingWindowDays: 7})
	must(t, "ScheduleKeyDeletion", err)
	if d := del.GetDeletionDate().AsTime().Sub(before); del.GetKeyId() != id || del.GetKeyState() != pb.KeyState_KEY_STATE_PENDING_DELETION ||
		del.GetPendingWindowDays() != 7 || d < 7*24*time.Hour-time.Hour || d > 7*24*time.Hour+time.Hour {
		t.Errorf("ScheduleKeyDeletion: %v (deletion %v from now)", del, d)
	}
	if m := s.describe(t, id); m.GetKeyState() != pb.KeyState_KEY_STATE_PENDING_DELETION || m.GetPendingWindowDays() != 7 || m.GetDeletionDate() == nil {
		t.Errorf("DescribeKey pending deletion: %v", m)
	}
	pending := "key " + id + " is pending deletion; cancel the deletion first"
	_, err = s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("x")})
	wantErr(t, "Encrypt pending deletion", err, codes.FailedPrecondition, "KMSInvalidStateException", "key "+id+" is pending deletion (on ...")
	_, err = s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()})
	wantErr(t, "Decrypt pending deletion", err, codes.FailedPrecondition, "KMSInvalidStateException", "key "+id+" is pending deletion (on ...")
	_, err = s.kc.ScheduleKeyDeletion(ctx, &pb.ScheduleKeyDeletionRequest{KeyId: id})
	wantErr(t, "ScheduleKeyDeletion twice", err, codes.FailedPrecondition, "KMSInvalidStateException", "key "+id+" is already pending deletion (on ...")
	_, err = s.kc.EnableKey(ctx, &pb.EnableKeyRequest{KeyId: id})
	wantErr(t, "EnableKey pending deletion", err, codes.FailedPrecondition, "KMSInvalidStateException", pending)
	_, err = s.kc.DisableKey(ctx, &pb.DisableKeyRequest{KeyId: id})
	wantErr(t, "DisableKey pending deletion", err, codes.FailedPrecondition, "KMSInvalidStateException", pending)
	_, err = s.kc.UpdateKeyDescription(ctx, &pb.UpdateKeyDescriptionRequest{KeyId: id, Description: "x"})
	wantErr(t, "UpdateKeyDescription pending deletion", err, codes.FailedPrecondition, "KMSInvalidStateException", pending)
	_, err = s.kc.TagKey(ctx, &pb.TagKeyRequest{KeyId: id, Tags: map[string]string{"a": "b"}})
	wantErr(t, "TagKey pending deletion", err, codes.FailedPrecondition, "KMSInvalidStateException", pending)
	_, err = s.kc.UntagKey(ctx, &pb.UntagKeyRequest{KeyId: id, TagKeys: []string{"a"}})
	wantErr(t, "UntagKey pending deletion", err, codes.FailedPrecondition, "KMSInvalidStateException", pending)
	_, err = s.kc.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: s.alias("late"), TargetKeyId: id})
	wantErr(t, "CreateAlias to a key pending deletion", err, codes.FailedPrecondition, "KMSInvalidStateException", pending)

	cancel, err := s.kc.CancelKeyDeletion(ctx, &pb.CancelKeyDeletionRequest{KeyId: id})
	must(t, "CancelKeyDeletion", err)
	if cancel.GetKeyId() != id || cancel.GetKeyState() != pb.KeyState_KEY_STATE_DISABLED {
		t.Errorf("CancelKeyDeletion: %v", cancel)
	}
	if m := s.describe(t, id); m.GetKeyState() != pb.KeyState_KEY_STATE_DISABLED || m.GetDeletionDate() != nil || m.GetPendingWindowDays() != 0 {
		t.Errorf("DescribeKey after CancelKeyDeletion: %v", m)
	}
	_, err = s.kc.CancelKeyDeletion(ctx, &pb.CancelKeyDeletionRequest{KeyId: id})
	wantErr(t, "CancelKeyDeletion twice", err, codes.FailedPrecondition, "KMSInvalidStateException", "key "+id+" is not pending deletion (it is Disabled)")

	_, err = s.kc.EnableKey(ctx, &pb.EnableKeyRequest{KeyId: ec})
	must(t, "EnableKey", err)
	_, err = s.kc.RotateKey(ctx, &pb.RotateKeyRequest{KeyId: ec})
	wantErr(t, "RotateKey asymmetric", err, codes.FailedPrecondition, "UnsupportedOperationException",
		"key "+ec+" (ECC_NIST_P256, usage SIGN_VERIFY) does not rotate; only symmetric encryption keys (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT) do")
}

func (s *suite) testTags(t *testing.T) {
	ctx := ctxOf(t)
	m := s.create(t, 0, 0)
	id, name := m.GetKeyId(), m.GetAliasNames()[0]
	_, err := s.kc.TagKey(ctx, &pb.TagKeyRequest{KeyId: id, Tags: map[string]string{"a": "1", "b": "2", "c": ""}})
	must(t, "TagKey", err)
	_, err = s.kc.UntagKey(ctx, &pb.UntagKeyRequest{KeyId: id, TagKeys: []string{"a", "nonexistent"}})
	must(t, "UntagKey", err)
	tags, err := s.kc.ListKeyTags(ctx, &pb.ListKeyTagsRequest{KeyId: name})
	if err != nil || tags.GetKeyId() != id || len(tags.GetTags()) != 2 || tags.GetTags()["b"] != "2" || tags.GetTags()["c"] != "" {
		t.Errorf("ListKeyTags: %v, %v", tags, err)
	}
	_, err = s.kc.TagKey(ctx, &pb.TagKeyRequest{KeyId: id})
	wantInvalid(t, "TagKey without tags", err, fieldErr("Tags", "must name at least one tag"))
	_, err = s.kc.TagKey(ctx, &pb.TagKeyRequest{KeyId: id, Tags: map[string]string{"AWS:x": "1"}})
	wantInvalid(t, "TagKey reserved", err, keys.ValidateTags(map[string]string{"AWS:x": "1"}))
	_, err = s.kc.TagKey(ctx, &pb.TagKeyRequest{KeyId: id, Tags: map[string]string{"v": strings.Repeat("x", keys.MaxTagValue+1)}})
	wantInvalid(t, "TagKey long value", err, keys.ValidateTags(map[string]string{"v": strings.Repeat("x", keys.MaxTagValue+1)}))
	many := map[string]string{}
	for i := range keys.MaxTags - 1 {
		many[fmt.Sprint("t", i)] = ""
	}
	_, err = s.kc.TagKey(ctx, &pb.TagKeyRequest{KeyId: id, Tags: many})
	wantInvalid(t, "TagKey past 50 tags on the key", err, fieldErr("Tags", "must be at most %d tags, got %d", keys.MaxTags, keys.MaxTags+1))
	_, err = s.kc.UntagKey(ctx, &pb.UntagKeyRequest{KeyId: id})
	wantInvalid(t, "UntagKey without keys", err, keys.ValidateTagKeys(nil))
}

func (s *suite) testCiphertext(t *testing.T) {
	ctx := ctxOf(t)
	id, other := s.symmetric(t), s.symmetric(t)
	name := s.describe(t, id).GetAliasNames()[0]
	ec := map[string]string{"app": "billing", "tenant": "7"}
	enc, err := s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: name, Plaintext: []byte("secret"), EncryptionContext: ec})
	must(t, "Encrypt", err)
	if enc.GetKeyId() != id || enc.GetEncryptionAlgorithm() != pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_SYMMETRIC_DEFAULT {
		t.Errorf("Encrypt response: key %s alg %v", enc.GetKeyId(), enc.GetEncryptionAlgorithm())
	}
	blob := enc.GetCiphertextBlob()
	again, err := s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("secret"), EncryptionContext: ec})
	if err != nil || bytes.Equal(again.GetCiphertextBlob(), blob) {
		t.Errorf("two encryptions of the same plaintext are equal (%v)", err)
	}
	for _, ref := range []string{"", id, name} {
		dec, err := s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: blob, EncryptionContext: ec, KeyId: ref})
		if err != nil || string(dec.GetPlaintext()) != "secret" || dec.GetKeyId() != id ||
			dec.GetEncryptionAlgorithm() != pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_SYMMETRIC_DEFAULT {
			t.Errorf("Decrypt with key %q: %v, %v", ref, dec, err)
		}
	}

	const invalidCT = keys.InvalidCiphertextMessage
	for what, ctx2 := range map[string]map[string]string{
		"no context":    nil,
		"another value": {"app": "billing", "tenant": "8"},
		"a pair less":   {"app": "billing"},
		"a pair more":   {"app": "billing", "tenant": "7", "x": ""},
	} {
		_, err := s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: blob, EncryptionContext: ctx2})
		wantErr(t, "Decrypt with "+what, err, codes.InvalidArgument, "InvalidCiphertextException", invalidCT)
	}
	for i := range blob {
		bad := bytes.Clone(blob)
		bad[i] ^= 0x01
		_, err := s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: bad, EncryptionContext: ec})
		wantErr(t, fmt.Sprintf("Decrypt with byte %d changed", i), err, codes.InvalidArgument, "InvalidCiphertextException", invalidCT)
	}
	for what, bad := range map[string][]byte{
		"truncated": blob[:len(blob)-1], "extended": append(bytes.Clone(blob), 0), "random": randomBytes(len(blob)), "one byte": {1},
	} {
		_, err := s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: bad, EncryptionContext: ec})
		wantErr(t, "Decrypt "+what, err, codes.InvalidArgument, "InvalidCiphertextException", invalidCT)
	}
	for _, n := range []int{0, keys.MaxCiphertextBlob + 1} {
		_, err := s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: make([]byte, n)})
		wantInvalid(t, fmt.Sprintf("Decrypt %d bytes", n), err, fieldErr("CiphertextBlob", "must be 1 to %d bytes, got %d", keys.MaxCiphertextBlob, n))
	}
	_, err = s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: blob, EncryptionContext: ec, KeyId: other})
	wantErr(t, "Decrypt naming another key", err, codes.InvalidArgument, "IncorrectKeyException", "the ciphertext was not made with key "+other)
	unknown := keys.NewKeyID()
	_, err = s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: blob, EncryptionContext: ec, KeyId: unknown})
	wantErr(t, "Decrypt naming an unknown key", err, codes.NotFound, "NotFoundException", "key "+unknown+" does not exist")

	// Rotation: old ciphertexts still decrypt, new ones too.
	_, err = s.kc.RotateKey(ctx, &pb.RotateKeyRequest{KeyId: id})
	must(t, "RotateKey", err)
	if m := s.describe(t, id); m.GetCurrentVersion() != 2 {
		t.Errorf("current version after RotateKey: %d", m.GetCurrentVersion())
	}
	newer, err := s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("newer")})
	must(t, "Encrypt after RotateKey", err)
	for want, b := range map[string][]byte{"secret": blob, "newer": newer.GetCiphertextBlob()} {
		c := ec
		if want == "newer" {
			c = nil
		}
		if dec, err := s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: b, EncryptionContext: c}); err != nil || string(dec.GetPlaintext()) != want {
			t.Errorf("Decrypt %q after RotateKey: %v", want, err)
		}
	}
}

func (s *suite) testLimits(t *testing.T) {
	ctx := ctxOf(t)
	id := s.symmetric(t)
	for _, n := range []int{1, keys.MaxPlaintext} {
		pt := randomBytes(n)
		enc, err := s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: pt})
		must(t, fmt.Sprintf("Encrypt %d bytes", n), err)
		if dec, err := s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob()}); err != nil || !bytes.Equal(dec.GetPlaintext(), pt) {
			t.Errorf("Decrypt of %d bytes: %v", n, err)
		}
	}
	for _, n := range []int{0, keys.MaxPlaintext + 1} {
		_, err := s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: make([]byte, n)})
		wantInvalid(t, fmt.Sprintf("Encrypt %d bytes", n), err, keys.ValidatePlaintext("Plaintext", make([]byte, n), keys.MaxPlaintext))
	}

	most := map[string]string{}
	for i := range keys.MaxContextPairs {
		most[fmt.Sprintf("k%02d", i)] = "v"
	}
	enc, err := s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("x"), EncryptionContext: most})
	must(t, "Encrypt with the most context pairs", err)
	if _, err := s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob(), EncryptionContext: most}); err != nil {
		t.Errorf("Decrypt with the most context pairs: %v", err)
	}
	tooMany := map[string]string{"extra": ""}
	for k, v := range most {
		tooMany[k] = v
	}
	big := map[string]string{"k": strings.Repeat("v", keys.MaxContextSize)}
	for what, c := range map[string]map[string]string{"too many pairs": tooMany, "too large": big, "an empty key": {"": "v"}} {
		want := keys.ValidateContext(c)
		_, err := s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("x"), EncryptionContext: c})
		wantInvalid(t, "Encrypt context "+what, err, want)
		_, err = s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob(), EncryptionContext: c})
		wantInvalid(t, "Decrypt context "+what, err, want)
		_, err = s.cc.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: id, KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256, EncryptionContext: c})
		wantInvalid(t, "GenerateDataKey context "+what, err, want)
	}

	r, err := s.cc.GenerateRandom(ctx, &pb.GenerateRandomRequest{NumberOfBytes: keys.MaxRandomBytes})
	if err != nil || len(r.GetPlaintext()) != keys.MaxRandomBytes {
		t.Errorf("GenerateRandom %d: %d bytes, %v", keys.MaxRandomBytes, len(r.GetPlaintext()), err)
	}
	for _, n := range []uint32{0, keys.MaxRandomBytes + 1, 1 << 31} {
		_, err := s.cc.GenerateRandom(ctx, &pb.GenerateRandomRequest{NumberOfBytes: n})
		wantInvalid(t, fmt.Sprintf("GenerateRandom %d", n), err, fieldErr("NumberOfBytes", "must be 1 to %d, got %d", keys.MaxRandomBytes, n))
	}
}

func (s *suite) testDataKeys(t *testing.T) {
	ctx := ctxOf(t)
	id := s.symmetric(t)
	ec := map[string]string{"file": "a"}
	for _, tt := range []struct {
		spec pb.DataKeySpec
		n    uint32
		want int
	}{{pb.DataKeySpec_DATA_KEY_SPEC_AES_256, 0, 32}, {pb.DataKeySpec_DATA_KEY_SPEC_AES_128, 0, 16}, {0, 7, 7}, {0, keys.MaxRandomBytes, keys.MaxRandomBytes}} {
		dk, err := s.cc.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: id, KeySpec: tt.spec, NumberOfBytes: tt.n, EncryptionContext: ec})
		must(t, "GenerateDataKey", err)
		dec, err := s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: dk.GetCiphertextBlob(), EncryptionContext: ec})
		if err != nil || len(dk.GetPlaintext()) != tt.want || !bytes.Equal(dec.GetPlaintext(), dk.GetPlaintext()) || dk.GetKeyId() != id {
			t.Errorf("GenerateDataKey %v/%d: %d bytes, decrypts %v", tt.spec, tt.n, len(dk.GetPlaintext()), err)
		}
		_, err = s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: dk.GetCiphertextBlob()})
		wantErr(t, "Decrypt a data key without its context", err, codes.InvalidArgument, "InvalidCiphertextException", keys.InvalidCiphertextMessage)
	}
	wo, err := s.cc.GenerateDataKeyWithoutPlaintext(ctx, &pb.GenerateDataKeyWithoutPlaintextRequest{KeyId: id, KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256})
	must(t, "GenerateDataKeyWithoutPlaintext", err)
	if dec, err := s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: wo.GetCiphertextBlob()}); err != nil || len(dec.GetPlaintext()) != 32 {
		t.Errorf("Decrypt of GenerateDataKeyWithoutPlaintext: %v", err)
	}
	_, want := keys.DataKeyBytes(keys.DataKeyAES256, 16)
	_, err = s.cc.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: id, KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256, NumberOfBytes: 16})
	wantInvalid(t, "GenerateDataKey spec and bytes", err, want)
	_, want = keys.DataKeyBytes("", 0)
	_, err = s.cc.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: id})
	wantInvalid(t, "GenerateDataKey neither", err, want)
	_, err = s.cc.GenerateDataKeyWithoutPlaintext(ctx, &pb.GenerateDataKeyWithoutPlaintextRequest{KeyId: id, NumberOfBytes: 5000})
	wantInvalid(t, "GenerateDataKeyWithoutPlaintext too long", err, fieldErr("NumberOfBytes", "must be 1 to %d, got %d", keys.MaxRandomBytes, 5000))
	ec2 := s.create(t, pb.KeySpec_KEY_SPEC_ECC_NIST_P256, 0).GetKeyId()
	_, err = s.cc.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: ec2, KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256})
	wantErr(t, "GenerateDataKey under a signing key", err, codes.InvalidArgument, "InvalidKeyUsageException", "key "+ec2+" has usage SIGN_VERIFY; this operation needs ENCRYPT_DECRYPT")
}

func (s *suite) testRSA(t *testing.T) {
	ctx := ctxOf(t)
	m := s.create(t, pb.KeySpec_KEY_SPEC_RSA_2048, pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT)
	id := m.GetKeyId()
	oaep := pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_256
	if !slices.Equal(m.GetEncryptionAlgorithms(), []pb.EncryptionAlgorithm{pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_1, oaep}) {
		t.Errorf("RSA encryption algorithms: %v", m.GetEncryptionAlgorithms())
	}
	pk, err := s.cc.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: id})
	must(t, "GetPublicKey", err)
	pub, err := x509.ParsePKIXPublicKey(pk.GetPublicKey())
	if rp, ok := pub.(*rsa.PublicKey); err != nil || !ok || rp.N.BitLen() != 2048 || pk.GetKeySpec() != pb.KeySpec_KEY_SPEC_RSA_2048 ||
		pk.GetKeyUsage() != pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT || len(pk.GetEncryptionAlgorithms()) != 2 {
		t.Fatalf("GetPublicKey of RSA_2048: %T %v", pub, err)
	}
	// A ciphertext made offline with the public key decrypts.
	offline, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub.(*rsa.PublicKey), []byte("offline"), nil)
	must(t, "EncryptOAEP", err)
	dec, err := s.cc.Decrypt(ctx, &pb.DecryptRequest{KeyId: id, CiphertextBlob: offline, EncryptionAlgorithm: oaep})
	if err != nil || string(dec.GetPlaintext()) != "offline" || dec.GetEncryptionAlgorithm() != oaep {
		t.Errorf("Decrypt of an offline RSA ciphertext: %v", err)
	}
	enc, err := s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("online"), EncryptionAlgorithm: oaep})
	must(t, "Encrypt RSA", err)
	dec, err = s.cc.Decrypt(ctx, &pb.DecryptRequest{KeyId: id, CiphertextBlob: enc.GetCiphertextBlob(), EncryptionAlgorithm: oaep})
	if err != nil || string(dec.GetPlaintext()) != "online" {
		t.Errorf("Decrypt RSA: %v", err)
	}
	_, err = s.cc.Decrypt(ctx, &pb.DecryptRequest{KeyId: id, CiphertextBlob: enc.GetCiphertextBlob(), EncryptionAlgorithm: pb.EncryptionAlgorithm_ENCRYPTION_ALGORITHM_RSAES_OAEP_SHA_1})
	wantErr(t, "Decrypt RSA with the other hash", err, codes.InvalidArgument, "InvalidCiphertextException", keys.InvalidCiphertextMessage)
	_, err = s.cc.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: enc.GetCiphertextBlob(), EncryptionAlgorithm: oaep})
	wantInvalid(t, "Decrypt RSA without a key", err, fieldErr("KeyId", "is required to decrypt with RSAES_OAEP_SHA_256"))
	_, err = s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("x"), EncryptionAlgorithm: oaep, EncryptionContext: map[string]string{"a": "b"}})
	wantInvalid(t, "Encrypt RSA with a context", err, fieldErr("EncryptionContext", "is not supported with asymmetric keys"))
	limit := keys.SpecRSA2048.PlaintextLimit(keys.EncryptionRSAESOAEPSHA256)
	_, err = s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: make([]byte, limit+1), EncryptionAlgorithm: oaep})
	wantInvalid(t, "Encrypt RSA past its limit", err, keys.ValidatePlaintext("Plaintext", make([]byte, limit+1), limit))
	_, want := keys.CheckEncryptionAlgorithm(keys.SpecRSA2048, keys.UsageEncryptDecrypt, "")
	_, err = s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("x")})
	wantInvalid(t, "Encrypt RSA without an algorithm", err, want)
	_, err = s.cc.Decrypt(ctx, &pb.DecryptRequest{KeyId: id, CiphertextBlob: enc.GetCiphertextBlob()})
	wantInvalid(t, "Decrypt RSA without an algorithm", err, want)
	_, err = s.cc.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{KeyId: id, KeySpec: pb.DataKeySpec_DATA_KEY_SPEC_AES_256})
	wantErr(t, "GenerateDataKey under an RSA key", err, codes.InvalidArgument, "InvalidKeyUsageException", "data keys are encrypted under symmetric keys; key "+id+" is RSA_2048")
	sym := s.symmetric(t)
	_, want = keys.CheckEncryptionAlgorithm(keys.SpecSymmetricDefault, keys.UsageEncryptDecrypt, keys.EncryptionRSAESOAEPSHA256)
	_, err = s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: sym, Plaintext: []byte("x"), EncryptionAlgorithm: oaep})
	wantInvalid(t, "Encrypt symmetric with OAEP", err, want)
}

func (s *suite) testSignVerify(t *testing.T) {
	ctx := ctxOf(t)
	id := s.create(t, pb.KeySpec_KEY_SPEC_ECC_NIST_P256, 0).GetKeyId()
	alg := pb.SigningAlgorithm_SIGNING_ALGORITHM_ECDSA_SHA_256
	msg := []byte("release 1.0")
	sig, err := s.cc.Sign(ctx, &pb.SignRequest{KeyId: id, Message: msg, SigningAlgorithm: alg})
	must(t, "Sign", err)
	if sig.GetKeyId() != id || sig.GetSigningAlgorithm() != alg {
		t.Errorf("Sign response: %v", sig)
	}
	pk, err := s.cc.GetPublicKey(ctx, &pb.GetPublicKeyRequest{KeyId: id})
	must(t, "GetPublicKey", err)
	pub, err := x509.ParsePKIXPublicKey(pk.GetPublicKey())
	ep, ok := pub.(*ecdsa.PublicKey)
	digest := sha256.Sum256(msg)
	if err != nil || !ok || !ecdsa.VerifyASN1(ep, digest[:], sig.GetSignature()) ||
		!slices.Equal(pk.GetSigningAlgorithms(), []pb.SigningAlgorithm{alg}) || len(pk.GetEncryptionAlgorithms()) != 0 {
		t.Errorf("the signature does not verify with the public key (%T, %v)", pub, err)
	}
	dsig, err := s.cc.Sign(ctx, &pb.SignRequest{KeyId: id, Message: digest[:], MessageType: pb.MessageType_MESSAGE_TYPE_DIGEST, SigningAlgorithm: alg})
	must(t, "Sign a digest", err)
	for what, tt := range map[string]struct {
		msg, sig []byte
		mt       pb.MessageType
		want     bool
	}{
		"message":             {msg, sig.GetSignature(), 0, true},
		"digest":              {digest[:], sig.GetSignature(), pb.MessageType_MESSAGE_TYPE_DIGEST, true},
		"signed digest":       {msg, dsig.GetSignature(), 0, true},
		"another message":     {[]byte("release 1.1"), sig.GetSignature(), 0, false},
		"a signature changed": {msg, append(bytes.Clone(sig.GetSignature()[:len(sig.GetSignature())-1]), sig.GetSignature()[len(sig.GetSignature())-1]^1), 0, false},
		"a signature of junk": {msg, randomBytes(64), 0, false},
	} {
		v, err := s.cc.Verify(ctx, &pb.VerifyRequest{KeyId: id, Message: tt.msg, MessageType: tt.mt, Signature: tt.sig, SigningAlgorithm: alg})
		if err != nil || v.GetSignatureValid() != tt.want || v.GetKeyId() != id {
			t.Errorf("Verify %s: valid %v, %v; want %v", what, v.GetSignatureValid(), err, tt.want)
		}
	}
	_, err = s.cc.Verify(ctx, &pb.VerifyRequest{KeyId: id, Message: msg, SigningAlgorithm: alg})
	wantInvalid(t, "Verify without a signature", err, fieldErr("Signature", "must be 1 to 1024 bytes, got 0"))
	_, err = s.cc.Sign(ctx, &pb.SignRequest{KeyId: id, Message: make([]byte, keys.MaxPlaintext+1), SigningAlgorithm: alg})
	wantInvalid(t, "Sign a long message", err, keys.ValidateMessage(keys.MessageRaw, keys.SigningECDSASHA256, make([]byte, keys.MaxPlaintext+1)))
	_, err = s.cc.Sign(ctx, &pb.SignRequest{KeyId: id, Message: []byte("short"), MessageType: pb.MessageType_MESSAGE_TYPE_DIGEST, SigningAlgorithm: alg})
	wantInvalid(t, "Sign a short digest", err, keys.ValidateMessage(keys.MessageDigest, keys.SigningECDSASHA256, []byte("short")))
	_, err = s.cc.Sign(ctx, &pb.SignRequest{KeyId: id, Message: msg})
	wantInvalid(t, "Sign without an algorithm", err, fieldErr("SigningAlgorithm", "must be one of %v", keys.AllSigningAlgorithms))
	_, err = s.cc.Sign(ctx, &pb.SignRequest{KeyId: id, Message: msg, SigningAlgorithm: pb.SigningAlgorithm_SIGNING_ALGORITHM_RSASSA_PSS_SHA_256})
	wantInvalid(t, "Sign with an RSA algorithm", err, keys.CheckSigningAlgorithm(keys.SpecECCNISTP256, keys.UsageSignVerify, keys.SigningRSASSAPSSSHA256))
	sym := s.symmetric(t)
	_, err = s.cc.Sign(ctx, &pb.SignRequest{KeyId: sym, Message: msg, SigningAlgorithm: alg})
	wantErr(t, "Sign with a symmetric key", err, codes.InvalidArgument, "InvalidKeyUsageException", "key "+sym+" has usage ENCRYPT_DECRYPT; this operation needs SIGN_VERIFY")
	_, err = s.cc.Encrypt(ctx, &pb.EncryptRequest{KeyId: id, Plaintext: []byte("x")})
	wantErr(t, "Encrypt with a signing key", err, codes.InvalidArgument, "InvalidKeyUsageException", "key "+id+" has usage SIGN_VERIFY; this operation needs ENCRYPT_DECRYPT")
}

func (s *suite) testMac(t *testing.T) {
	ctx := ctxOf(t)
	id := s.create(t, pb.KeySpec_KEY_SPEC_HMAC_256, 0).GetKeyId()
	alg := pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_256
	mac, err := s.cc.GenerateMac(ctx, &pb.GenerateMacRequest{KeyId: id, Message: []byte("m"), MacAlgorithm: alg})
	must(t, "GenerateMac", err)
	again, err := s.cc.GenerateMac(ctx, &pb.GenerateMacRequest{KeyId: id, Message: []byte("m"), MacAlgorithm: alg})
	if err != nil || len(mac.GetMac()) != 32 || !bytes.Equal(again.GetMac(), mac.GetMac()) || mac.GetKeyId() != id || mac.GetMacAlgorithm() != alg {
		t.Errorf("GenerateMac: %d bytes, deterministic %v, %v", len(mac.GetMac()), bytes.Equal(again.GetMac(), mac.GetMac()), err)
	}
	for what, tt := range map[string]struct {
		msg, mac []byte
		want     bool
	}{"right": {[]byte("m"), mac.GetMac(), true}, "another message": {[]byte("n"), mac.GetMac(), false}, "junk": {[]byte("m"), randomBytes(32), false}} {
		v, err := s.cc.VerifyMac(ctx, &pb.VerifyMacRequest{KeyId: id, Message: tt.msg, Mac: tt.mac, MacAlgorithm: alg})
		if err != nil || v.GetMacValid() != tt.want {
			t.Errorf("VerifyMac %s: %v, %v; want %v", what, v.GetMacValid(), err, tt.want)
		}
	}
	_, err = s.cc.VerifyMac(ctx, &pb.VerifyMacRequest{KeyId: id, Message: []byte("m"), MacAlgorithm: alg})
	wantInvalid(t, "VerifyMac without a MAC", err, fieldErr("Mac", "must be 1 to 64 bytes, got 0"))
	_, err = s.cc.GenerateMac(ctx, &pb.GenerateMacRequest{KeyId: id, Message: make([]byte, keys.MaxPlaintext+1), MacAlgorithm: alg})
	wantInvalid(t, "GenerateMac a long message", err, keys.ValidatePlaintext("Message", make([]byte, keys.MaxPlaintext+1), keys.MaxPlaintext))
	_, err = s.cc.GenerateMac(ctx, &pb.GenerateMacRequest{KeyId: id, Message: []byte("m"), MacAlgorithm: pb.MacAlgorithm_MAC_ALGORITHM_HMAC_SHA_512})
	wantInvalid(t, "GenerateMac with another hash", err, keys.CheckMacAlgorithm(keys.SpecHMAC256, keys.UsageGenerateVerifyMAC, keys.MacHMACSHA512))
	_, err = s.cc.GenerateMac(ctx, &pb.GenerateMacRequest{KeyId: id, Message: []byte("m")})
	wantInvalid(t, "GenerateMac without an algorithm", err, fieldErr("MacAlgorithm", "must be one of %v", keys.AllMacAlgorithms))
}

func (s *suite) testCluster(t *testing.T) {
	checkClusterStatus(t, s.cl)
	checkBackup(t, s.cl)
}
