package awskms

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// operation decodes a TrentService request body into the operation's
// typed request: the one value that is authorized, audited and acted on.
type operation func(body []byte) (*decoded, error)

// decoded is one request, decoded once. contexts are read from the typed
// request (contextFields) and run hands that same request to the operation.
type decoded struct {
	contexts broker.RequestContexts
	run      func(h *Handler, ctx context.Context) (any, error)
}

// op adapts a typed operation: it decodes the body strictly (decodeStrict),
// and its run answers a successful DryRun with DryRunOperationException,
// as AWS does. The operations that take DryRun have no side effects, so
// running them is how the answer is decided.
func op[In any, Out any](fn func(*Handler, context.Context, *In) (Out, error)) operation {
	fields := contextFieldsOf(reflect.TypeFor[In]())
	return func(body []byte) (*decoded, error) {
		in := new(In)
		if err := decodeStrict(body, in); err != nil {
			return nil, err
		}
		if g, ok := any(in).(interface{ checkGrantTokens() error }); ok {
			if err := g.checkGrantTokens(); err != nil {
				return nil, err
			}
		}
		return &decoded{contexts: fields.of(in), run: func(h *Handler, ctx context.Context) (any, error) {
			out, err := fn(h, ctx, in)
			if err != nil {
				return nil, err
			}
			if d, ok := any(in).(interface{ isDryRun() bool }); ok && d.isDryRun() {
				return nil, &apiError{http.StatusPreconditionFailed, excDryRun, msgDryRunWouldSucceed}
			}
			return out, nil
		}}, nil
	}
}

// operations is the dispatch table of X-Amz-Target names.
var operations = map[string]operation{
	"CreateKey":                           op((*Handler).createKey),
	"DescribeKey":                         op((*Handler).describeKey),
	"ListKeys":                            op((*Handler).listKeys),
	"EnableKey":                           op((*Handler).enableKey),
	"DisableKey":                          op((*Handler).disableKey),
	"ScheduleKeyDeletion":                 op((*Handler).scheduleKeyDeletion),
	"CancelKeyDeletion":                   op((*Handler).cancelKeyDeletion),
	"UpdateKeyDescription":                op((*Handler).updateKeyDescription),
	"CreateAlias":                         op((*Handler).createAlias),
	"UpdateAlias":                         op((*Handler).updateAlias),
	"DeleteAlias":                         op((*Handler).deleteAlias),
	"ListAliases":                         op((*Handler).listAliases),
	"TagResource":                         op((*Handler).tagResource),
	"UntagResource":                       op((*Handler).untagResource),
	"ListResourceTags":                    op((*Handler).listResourceTags),
	"EnableKeyRotation":                   op((*Handler).enableKeyRotation),
	"DisableKeyRotation":                  op((*Handler).disableKeyRotation),
	"GetKeyRotationStatus":                op((*Handler).getKeyRotationStatus),
	"RotateKeyOnDemand":                   op((*Handler).rotateKeyOnDemand),
	"ListKeyRotations":                    op((*Handler).listKeyRotations),
	"GetKeyPolicy":                        op((*Handler).getKeyPolicy),
	"PutKeyPolicy":                        op((*Handler).putKeyPolicy),
	"ListKeyPolicies":                     op((*Handler).listKeyPolicies),
	"Encrypt":                             op((*Handler).encrypt),
	"Decrypt":                             op((*Handler).decrypt),
	"ReEncrypt":                           op((*Handler).reEncrypt),
	"GenerateDataKey":                     op((*Handler).generateDataKey),
	"GenerateDataKeyWithoutPlaintext":     op((*Handler).generateDataKeyWithoutPlaintext),
	"GenerateDataKeyPair":                 op((*Handler).generateDataKeyPair),
	"GenerateDataKeyPairWithoutPlaintext": op((*Handler).generateDataKeyPairWithoutPlaintext),
	"GetPublicKey":                        op((*Handler).getPublicKey),
	"Sign":                                op((*Handler).sign),
	"Verify":                              op((*Handler).verify),
	"GenerateMac":                         op((*Handler).generateMac),
	"VerifyMac":                           op((*Handler).verifyMac),
	"GenerateRandom":                      op((*Handler).generateRandom),
	"CreateGrant":                         op((*Handler).createGrant),
	"ListGrants":                          op((*Handler).listGrants),
	"RevokeGrant":                         op((*Handler).revokeGrant),
	"RetireGrant":                         op((*Handler).retireGrant),
}

// unsupportedOperations are TrentService operations this service answers
// with UnsupportedOperationException.
var unsupportedOperations = map[string]bool{
	"ListRetirableGrants":   true,
	"ConnectCustomKeyStore": true, "CreateCustomKeyStore": true, "DeleteCustomKeyStore": true,
	"DescribeCustomKeyStores": true, "DisconnectCustomKeyStore": true, "UpdateCustomKeyStore": true,
	"GetParametersForImport": true, "ImportKeyMaterial": true, "DeleteImportedKeyMaterial": true,
	"ReplicateKey": true, "UpdatePrimaryRegion": true, "DeriveSharedSecret": true,
	"Encapsulate": true, "Decapsulate": true, "GetKeyLastUsage": true,
}

// --- Request fields -------------------------------------------------------

// lowerFirst is a member name as AWS validation messages spell it.
func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

func required(field string) error {
	return validation("1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", lowerFirst(field))
}

// keyRef checks the key a request names and returns it in the form the core
// takes (a key id or alias name). Management operations (aliasOK false)
// take a key id or key ARN only, as in AWS. A key ARN or alias ARN of
// another region or account names no key here.
func (h *Handler) keyRef(field, ref string, aliasOK bool) (string, error) {
	switch {
	case ref == "":
		return "", required(field)
	case len(ref) > keys.MaxKeyRef:
		return "", validation("1 validation error detected: Value at '%s' failed to satisfy constraint: Member must have length less than or equal to %d",
			lowerFirst(field), keys.MaxKeyRef)
	}
	kr, err := keys.ParseKeyRef(ref)
	if err != nil {
		return "", notFound("Invalid keyId %s", netlimit.Truncate(ref, 128))
	}
	if kr.OtherCluster(field, h.region, h.account) != "" {
		what := "Key"
		if kr.IsAlias() {
			what = "Alias"
		}
		return "", notFound("%s '%s' does not exist", what, netlimit.Truncate(ref, 256))
	}
	if kr.IsAlias() && !aliasOK {
		return "", notFound("Invalid keyId %s: this operation takes a key id or key ARN, not an alias", netlimit.Truncate(ref, 128))
	}
	return kr.String(), nil
}

// parseEnum converts an AWS enum value to its proto enum: "" is
// unspecified (the core's default); any other value not defined is
// refused as enumErr says.
func parseEnum[E ~int32](field, s, prefix string, values map[string]int32, awsOnly ...string) (E, error) {
	if s == "" {
		return 0, nil
	}
	if v, ok := values[prefix+s]; ok && v != 0 {
		return E(v), nil
	}
	var all []string
	for name, v := range values {
		if v != 0 {
			all = append(all, strings.TrimPrefix(name, prefix))
		}
	}
	return 0, enumErr(field, s, all, awsOnly)
}

// parseName converts an AWS enum value straight to the core's typed name
// (keys.Spec, keys.Usage): "" is unset (the core's default); any other
// value not in values is refused as enumErr says.
func parseName[T ~string](field, s string, values []T, awsOnly ...string) (T, error) {
	if s == "" || slices.Contains(values, T(s)) {
		return T(s), nil
	}
	all := make([]string, 0, len(values))
	for _, v := range values {
		all = append(all, string(v))
	}
	return "", enumErr(field, s, all, awsOnly)
}

// enumErr refuses s, a value of the enum field that is not one of valid:
// a value AWS defines but this service does not support (awsOnly) is an
// UnsupportedOperationException, anything else a ValidationException
// listing every value.
func enumErr(field, s string, valid, awsOnly []string) error {
	if slices.Contains(awsOnly, s) {
		return unsupported("%s %s is not supported by this key service", field, s)
	}
	sort.Strings(valid)
	return validation("1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must satisfy enum value set: [%s]",
		netlimit.Truncate(s, 64), lowerFirst(field), strings.Join(append(valid, awsOnly...), ", "))
}

// enumName is the AWS name of a proto enum value ("" for unspecified).
func enumName(s fmt.Stringer, prefix string) string {
	name := strings.TrimPrefix(s.String(), prefix)
	if strings.HasSuffix(name, "UNSPECIFIED") {
		return ""
	}
	return name
}

func enumNames[E fmt.Stringer](vs []E, prefix string) []string {
	if len(vs) == 0 {
		return nil
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = enumName(v, prefix)
	}
	return out
}

// limit checks the Limit of a List operation.
func limit(l *int32, def, maxV int32) (int32, error) {
	if l == nil {
		return def, nil
	}
	if *l < 1 || *l > maxV {
		return 0, validation("1 validation error detected: Value '%d' at 'limit' failed to satisfy constraint: Member must have value between 1 and %d", *l, maxV)
	}
	return *l, nil
}

// Markers of the lists this front pages itself (tags, rotations) are
// positions, opaque to callers.
func encodeMarker(i int) string {
	return base64.RawURLEncoding.EncodeToString([]byte("p" + strconv.Itoa(i)))
}

func decodeMarker(m string, n int) (int, error) {
	if m == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(m)
	if err == nil && len(b) > 1 && b[0] == 'p' {
		if i, err := strconv.Atoi(string(b[1:])); err == nil && i >= 0 && i <= n {
			return i, nil
		}
	}
	return 0, &apiError{http.StatusBadRequest, broker.ExcInvalidMarker, "Marker is not a marker this service issued"}
}

// markerErr rewords the core's page-token error in this API's terms.
func markerErr(err error) error {
	if _, exc, _ := broker.Classify(err); exc == broker.ExcInvalidMarker {
		return &apiError{http.StatusBadRequest, broker.ExcInvalidMarker, "Marker is not a marker this service issued"}
	}
	return err
}

func (h *Handler) arn(id string) string { return h.svc.KeyARN(id) }

// --- Keys -----------------------------------------------------------------

var (
	awsOnlyKeySpecs = []string{"ECC_SECG_P256K1", "HMAC_224", "SM2", "ML_DSA_44", "ML_DSA_65", "ML_DSA_87", "ECC_NIST_EDWARDS25519", "ML_KEM_512", "ML_KEM_768", "ML_KEM_1024"}
	awsOnlyUsages   = []string{"KEY_AGREEMENT", "KEM"}
)

func (h *Handler) keyMetadata(md *pb.KeyMetadata) *keyMetadata {
	spec := enumName(md.GetKeySpec(), "KEY_SPEC_")
	m := &keyMetadata{
		AWSAccountId:          h.account,
		KeyId:                 md.GetKeyId(),
		Arn:                   md.GetArn(),
		CreationDate:          epochTime(md.GetCreateTime().AsTime()),
		Enabled:               md.GetKeyState() == pb.KeyState_KEY_STATE_ENABLED,
		Description:           md.GetDescription(),
		KeyUsage:              enumName(md.GetKeyUsage(), "KEY_USAGE_"),
		KeyState:              keyState(md.GetKeyState()),
		Origin:                "AWS_KMS",
		KeyManager:            "CUSTOMER",
		CustomerMasterKeySpec: spec,
		KeySpec:               spec,
		EncryptionAlgorithms:  enumNames(md.GetEncryptionAlgorithms(), "ENCRYPTION_ALGORITHM_"),
		SigningAlgorithms:     enumNames(md.GetSigningAlgorithms(), "SIGNING_ALGORITHM_"),
		MacAlgorithms:         enumNames(md.GetMacAlgorithms(), "MAC_ALGORITHM_"),
	}
	if md.GetCreateTime() == nil {
		m.CreationDate = epochTime{}
	}
	if md.GetKeyState() == pb.KeyState_KEY_STATE_PENDING_DELETION {
		m.DeletionDate = epochTime(md.GetDeletionDate().AsTime())
		m.PendingDeletionWindowInDays = int32(md.GetPendingWindowDays())
	}
	return m
}

func keyState(s pb.KeyState) string {
	switch s {
	case pb.KeyState_KEY_STATE_ENABLED:
		return string(keys.StateEnabled)
	case pb.KeyState_KEY_STATE_DISABLED:
		return string(keys.StateDisabled)
	case pb.KeyState_KEY_STATE_PENDING_DELETION:
		return string(keys.StatePendingDeletion)
	}
	return ""
}

// tagMap converts a request's tag list, refusing duplicate and invalid tags
// with TagException, as AWS does.
func tagMap(tags []tagIn) (map[string]string, error) {
	m := make(map[string]string, len(tags))
	for i, t := range tags {
		if t.TagValue == nil {
			return nil, validation("1 validation error detected: Value null at 'tags.%d.member.tagValue' failed to satisfy constraint: Member must not be null", i+1)
		}
		if _, dup := m[t.TagKey]; dup {
			return nil, &apiError{http.StatusBadRequest, excTag, fmt.Sprintf("tag key %q appears more than once", netlimit.Truncate(t.TagKey, 128))}
		}
		m[t.TagKey] = *t.TagValue
	}
	return m, tagErr(keys.ValidateTags(m))
}

// tagErr turns a tag validation error into AWS's TagException.
func tagErr(err error) error {
	var fe *keys.FieldError
	if errors.As(err, &fe) && (fe.Field == "Tags" || fe.Field == "TagKeys") {
		return &apiError{http.StatusBadRequest, excTag, fe.Error()}
	}
	return err
}

func (h *Handler) createKey(ctx context.Context, in *createKeyInput) (*keyMetadataOutput, error) {
	switch {
	case in.CustomKeyStoreId != nil || in.XksKeyId != nil:
		return nil, unsupported("custom key stores are not supported: every key lives in this service's HSM cluster")
	case in.MultiRegion != nil && *in.MultiRegion:
		return nil, unsupported("multi-Region keys are not supported")
	}
	switch in.Origin {
	case "", "AWS_KMS":
	case "EXTERNAL", "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE":
		return nil, unsupported("Origin %s is not supported: key material is always generated in the HSM", in.Origin)
	default:
		return nil, validation("1 validation error detected: Value '%s' at 'origin' failed to satisfy constraint: Member must satisfy enum value set: [AWS_KMS, EXTERNAL, AWS_CLOUDHSM, EXTERNAL_KEY_STORE]", netlimit.Truncate(in.Origin, 64))
	}
	specName := in.KeySpec
	if in.CustomerMasterKeySpec != "" {
		if in.KeySpec != "" {
			return nil, validation("You cannot specify both KeySpec and CustomerMasterKeySpec; use KeySpec")
		}
		specName = in.CustomerMasterKeySpec
	}
	spec, err := parseName("KeySpec", specName, keys.Specs, awsOnlyKeySpecs...)
	if err != nil {
		return nil, err
	}
	usage, err := parseName("KeyUsage", in.KeyUsage, keys.AllUsages, awsOnlyUsages...)
	if err != nil {
		return nil, err
	}
	tags, err := tagMap(in.Tags)
	if err != nil {
		return nil, err
	}
	k, err := h.svc.CreateKey(ctx, broker.CreateKeyRequest{Spec: spec, Usage: usage, Description: in.Description, Tags: tags, Policy: in.Policy})
	if err != nil {
		return nil, tagErr(err)
	}
	return h.describe(ctx, k.ID)
}

func (h *Handler) describe(ctx context.Context, ref string) (*keyMetadataOutput, error) {
	resp, err := h.svc.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: ref})
	if err != nil {
		return nil, err
	}
	return &keyMetadataOutput{KeyMetadata: h.keyMetadata(resp.GetKeyMetadata())}, nil
}

func (h *Handler) describeKey(ctx context.Context, in *describeKeyInput) (*keyMetadataOutput, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, true)
	if err != nil {
		return nil, err
	}
	return h.describe(ctx, ref)
}

func (h *Handler) listKeys(ctx context.Context, in *listInput) (*listKeysOutput, error) {
	n, err := limit(in.Limit, 100, 1000)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.ListKeys(ctx, &pb.ListKeysRequest{PageSize: n, PageToken: in.Marker})
	if err != nil {
		return nil, markerErr(err)
	}
	out := &listKeysOutput{Keys: []keyListEntry{}, NextMarker: resp.GetNextPageToken(), Truncated: resp.GetNextPageToken() != ""}
	for _, k := range resp.GetKeys() {
		out.Keys = append(out.Keys, keyListEntry{KeyId: k.GetKeyId(), KeyArn: k.GetArn()})
	}
	return out, nil
}

func (h *Handler) enableKey(ctx context.Context, in *keyIDInput) (*empty, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	_, err = h.svc.EnableKey(ctx, &pb.EnableKeyRequest{KeyId: ref})
	return &empty{}, err
}

func (h *Handler) disableKey(ctx context.Context, in *keyIDInput) (*empty, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	_, err = h.svc.DisableKey(ctx, &pb.DisableKeyRequest{KeyId: ref})
	return &empty{}, err
}

func (h *Handler) scheduleKeyDeletion(ctx context.Context, in *scheduleKeyDeletionInput) (*scheduleKeyDeletionOutput, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	var days int32
	if in.PendingWindowInDays != nil {
		days = *in.PendingWindowInDays
		if _, err := keys.PendingWindow(max(days, 1)); err != nil || days < 1 {
			return nil, validation("PendingWindowInDays must be between %d and %d, got %d", keys.MinPendingWindow, keys.MaxPendingWindow, days)
		}
	}
	resp, err := h.svc.ScheduleKeyDeletion(ctx, &pb.ScheduleKeyDeletionRequest{KeyId: ref, PendingWindowDays: uint32(days)})
	if err != nil {
		return nil, err
	}
	return &scheduleKeyDeletionOutput{KeyId: h.arn(resp.GetKeyId()), DeletionDate: epochTime(resp.GetDeletionDate().AsTime()),
		KeyState: keyState(resp.GetKeyState()), PendingWindowInDays: int32(resp.GetPendingWindowDays())}, nil
}

func (h *Handler) cancelKeyDeletion(ctx context.Context, in *keyIDInput) (*keyIDOutput, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.CancelKeyDeletion(ctx, &pb.CancelKeyDeletionRequest{KeyId: ref})
	if err != nil {
		return nil, err
	}
	return &keyIDOutput{KeyId: h.arn(resp.GetKeyId())}, nil
}

func (h *Handler) updateKeyDescription(ctx context.Context, in *updateKeyDescriptionInput) (*empty, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	if in.Description == nil {
		return nil, required("Description")
	}
	_, err = h.svc.UpdateKeyDescription(ctx, &pb.UpdateKeyDescriptionRequest{KeyId: ref, Description: *in.Description})
	return &empty{}, err
}

// --- Aliases --------------------------------------------------------------

// aliasName checks an alias name; AWS answers a bad one with
// InvalidAliasNameException.
func aliasName(name string) error {
	if name == "" {
		return required("AliasName")
	}
	var fe *keys.FieldError
	if err := keys.ValidateAliasName(name); errors.As(err, &fe) {
		return &apiError{http.StatusBadRequest, broker.ExcInvalidAliasName, fe.Error()}
	}
	return nil
}

func (h *Handler) createAlias(ctx context.Context, in *aliasInput) (*empty, error) {
	if err := aliasName(in.AliasName); err != nil {
		return nil, err
	}
	ref, err := h.keyRef("TargetKeyId", in.TargetKeyId, false)
	if err != nil {
		return nil, err
	}
	_, err = h.svc.CreateAlias(ctx, &pb.CreateAliasRequest{AliasName: in.AliasName, TargetKeyId: ref})
	return &empty{}, err
}

func (h *Handler) updateAlias(ctx context.Context, in *aliasInput) (*empty, error) {
	if err := aliasName(in.AliasName); err != nil {
		return nil, err
	}
	ref, err := h.keyRef("TargetKeyId", in.TargetKeyId, false)
	if err != nil {
		return nil, err
	}
	_, err = h.svc.UpdateAlias(ctx, &pb.UpdateAliasRequest{AliasName: in.AliasName, TargetKeyId: ref})
	return &empty{}, err
}

func (h *Handler) deleteAlias(ctx context.Context, in *aliasInput) (*empty, error) {
	if err := aliasName(in.AliasName); err != nil {
		return nil, err
	}
	_, err := h.svc.DeleteAlias(ctx, &pb.DeleteAliasRequest{AliasName: in.AliasName})
	return &empty{}, err
}

func (h *Handler) listAliases(ctx context.Context, in *listAliasesInput) (*listAliasesOutput, error) {
	n, err := limit(in.Limit, 50, 100)
	if err != nil {
		return nil, err
	}
	req := &pb.ListAliasesRequest{PageSize: n, PageToken: in.Marker}
	if in.KeyId != "" {
		if req.KeyId, err = h.keyRef("KeyId", in.KeyId, false); err != nil {
			return nil, err
		}
	}
	resp, err := h.svc.ListAliases(ctx, req)
	if err != nil {
		return nil, markerErr(err)
	}
	out := &listAliasesOutput{Aliases: []aliasListEntry{}, NextMarker: resp.GetNextPageToken(), Truncated: resp.GetNextPageToken() != ""}
	for _, a := range resp.GetAliases() {
		e := aliasListEntry{AliasName: a.GetAliasName(), AliasArn: a.GetAliasArn(), TargetKeyId: a.GetTargetKeyId()}
		if a.GetCreateTime() != nil {
			e.CreationDate = epochTime(a.GetCreateTime().AsTime())
		}
		if a.GetUpdateTime() != nil {
			e.LastUpdatedDate = epochTime(a.GetUpdateTime().AsTime())
		}
		out.Aliases = append(out.Aliases, e)
	}
	return out, nil
}

// --- Tags -----------------------------------------------------------------

func (h *Handler) tagResource(ctx context.Context, in *tagResourceInput) (*empty, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	if len(in.Tags) == 0 {
		return nil, required("Tags")
	}
	tags, err := tagMap(in.Tags)
	if err != nil {
		return nil, err
	}
	_, err = h.svc.TagKey(ctx, &pb.TagKeyRequest{KeyId: ref, Tags: tags})
	return &empty{}, tagErr(err)
}

func (h *Handler) untagResource(ctx context.Context, in *untagResourceInput) (*empty, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	if err := tagErr(keys.ValidateTagKeys(in.TagKeys)); err != nil {
		return nil, err
	}
	_, err = h.svc.UntagKey(ctx, &pb.UntagKeyRequest{KeyId: ref, TagKeys: in.TagKeys})
	return &empty{}, tagErr(err)
}

func (h *Handler) listResourceTags(ctx context.Context, in *listResourceTagsInput) (*listResourceTagsOutput, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	n, err := limit(in.Limit, 50, 50)
	if err != nil {
		return nil, err
	}
	resp, err := h.svc.ListKeyTags(ctx, &pb.ListKeyTagsRequest{KeyId: ref})
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(resp.GetTags()))
	for k := range resp.GetTags() {
		names = append(names, k)
	}
	sort.Strings(names)
	start, err := decodeMarker(in.Marker, len(names))
	if err != nil {
		return nil, err
	}
	out := &listResourceTagsOutput{Tags: []tag{}}
	end := min(start+int(n), len(names))
	for _, k := range names[start:end] {
		out.Tags = append(out.Tags, tag{TagKey: k, TagValue: resp.GetTags()[k]})
	}
	if end < len(names) {
		out.NextMarker, out.Truncated = encodeMarker(end), true
	}
	return out, nil
}

// --- Rotation -------------------------------------------------------------

func (h *Handler) enableKeyRotation(ctx context.Context, in *enableKeyRotationInput) (*empty, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	if p := in.RotationPeriodInDays; p != nil {
		switch {
		case *p < 90 || *p > 2560:
			return nil, validation("1 validation error detected: Value '%d' at 'rotationPeriodInDays' failed to satisfy constraint: Member must have value between 90 and 2560", *p)
		case *p != broker.RotationPeriodDays:
			return nil, unsupported("keys rotate every %d days here; RotationPeriodInDays %d is not supported", broker.RotationPeriodDays, *p)
		}
	}
	return &empty{}, h.svc.SetKeyRotation(ctx, ref, true)
}

func (h *Handler) disableKeyRotation(ctx context.Context, in *keyIDInput) (*empty, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	return &empty{}, h.svc.SetKeyRotation(ctx, ref, false)
}

func (h *Handler) getKeyRotationStatus(ctx context.Context, in *keyIDInput) (*keyRotationStatusOutput, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	st, err := h.svc.KeyRotationStatus(ctx, ref)
	if err != nil {
		return nil, err
	}
	return &keyRotationStatusOutput{KeyId: h.arn(st.KeyID), KeyRotationEnabled: st.Enabled,
		RotationPeriodInDays: st.PeriodDays, NextRotationDate: epochTime(st.NextRotation)}, nil
}

func (h *Handler) rotateKeyOnDemand(ctx context.Context, in *keyIDInput) (*keyIDOutput, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	r, err := h.svc.RotateKey(ctx, broker.RotateKeyRequest{KeyRef: ref})
	var be *broker.Error
	if errors.As(err, &be) && be.Exception == broker.ExcDisabled {
		// AWS's RotateKeyOnDemand answers a disabled key as a key in the
		// wrong state.
		return nil, &broker.Error{Code: be.Code, Exception: broker.ExcInvalidState, Message: be.Message, Err: be.Err}
	}
	if err != nil {
		return nil, err
	}
	return &keyIDOutput{KeyId: r.Key.ID}, nil
}

func (h *Handler) listKeyRotations(ctx context.Context, in *listKeyRotationsInput) (*listKeyRotationsOutput, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	switch in.IncludeKeyMaterial {
	case "", "ALL_KEY_MATERIAL", "ROTATIONS_ONLY":
	default:
		return nil, validation("1 validation error detected: Value '%s' at 'includeKeyMaterial' failed to satisfy constraint: Member must satisfy enum value set: [ALL_KEY_MATERIAL, ROTATIONS_ONLY]", netlimit.Truncate(in.IncludeKeyMaterial, 64))
	}
	n, err := limit(in.Limit, 100, 1000)
	if err != nil {
		return nil, err
	}
	k, rs, err := h.svc.KeyRotations(ctx, ref)
	if err != nil {
		return nil, err
	}
	start, err := decodeMarker(in.Marker, len(rs))
	if err != nil {
		return nil, err
	}
	out := &listKeyRotationsOutput{Rotations: []rotationsListEntry{}}
	end := min(start+int(n), len(rs))
	for _, r := range rs[start:end] {
		out.Rotations = append(out.Rotations, rotationsListEntry{KeyId: k.ID, RotationDate: epochTime(r.Date)})
	}
	if end < len(rs) {
		out.NextMarker, out.Truncated = encodeMarker(end), true
	}
	return out, nil
}

// --- Key policies ---------------------------------------------------------

const defaultPolicyName = "default"

func (h *Handler) getKeyPolicy(ctx context.Context, in *keyPolicyInput) (*getKeyPolicyOutput, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	if in.PolicyName != nil && *in.PolicyName != defaultPolicyName {
		return nil, notFound("No such policy exists: a key has one policy, named %q", defaultPolicyName)
	}
	p, err := h.svc.GetKeyPolicy(ctx, broker.GetKeyPolicyRequest{KeyRef: ref})
	if err != nil {
		return nil, err
	}
	return &getKeyPolicyOutput{Policy: p.Policy, PolicyName: defaultPolicyName}, nil
}

func (h *Handler) putKeyPolicy(ctx context.Context, in *keyPolicyInput) (*empty, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	if in.PolicyName != nil && *in.PolicyName != defaultPolicyName {
		return nil, validation("PolicyName must be %q", defaultPolicyName)
	}
	if in.Policy == nil {
		return nil, required("Policy")
	}
	return &empty{}, h.svc.PutKeyPolicy(ctx, broker.PutKeyPolicyRequest{KeyRef: ref, Policy: *in.Policy})
}

func (h *Handler) listKeyPolicies(ctx context.Context, in *listKeyPoliciesInput) (*listKeyPoliciesOutput, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	if _, err := limit(in.Limit, 100, 1000); err != nil {
		return nil, err
	}
	// The one page has no next page, so no marker was ever issued for it.
	if in.Marker != nil {
		return nil, &apiError{http.StatusBadRequest, broker.ExcInvalidMarker, "Marker is not a marker this service issued"}
	}
	if _, err := h.svc.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: ref}); err != nil {
		return nil, err
	}
	return &listKeyPoliciesOutput{PolicyNames: []string{defaultPolicyName}}, nil
}
