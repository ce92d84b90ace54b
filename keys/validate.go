package keys

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on request fields, as in AWS KMS.
const (
	MaxPlaintext         = 4096 // Encrypt plaintext, Sign RAW message, GenerateMac message
	MaxRandomBytes       = 1024 // GenerateRandom, GenerateDataKey NumberOfBytes
	MaxSignature         = 1024 // Verify's Signature (RSA-4096 signatures are 512 bytes)
	MaxKeyRef            = 2048 // KeyId in any of its four forms
	MaxAliasName         = 256  // including the "alias/" prefix
	MaxDescription       = 8192 // characters
	MaxTags              = 50
	MaxTagKey            = 128 // characters
	MaxTagValue          = 256 // characters
	MinPendingWindow     = 7   // days
	MaxPendingWindow     = 30  // days
	DefaultPendingWindow = 30  // days
	DefaultPageSize      = 100
	MaxPageSize          = 1000
)

const (
	aliasPrefix         = "alias/"
	reservedAliasPrefix = "alias/aws/"
	maxAliasSuffix      = MaxAliasName - len(aliasPrefix) // 250
)

// ErrInvalidArgument is matched by every *FieldError: a request field is
// missing, malformed or out of its limits.
var ErrInvalidArgument = errors.New("keys: invalid argument")

// FieldError says which request field is invalid and why. Problem states the
// rule and, where useful, the size that broke it; it never holds the value
// itself, which may be secret (plaintext) or unbounded.
type FieldError struct {
	Field   string // the AWS KMS request field name, e.g. "KeyId", "Plaintext"
	Problem string // e.g. "must be 1 to 4096 bytes, got 5000"
}

func (e *FieldError) Error() string { return "invalid " + e.Field + ": " + e.Problem }

// Unwrap makes errors.Is(err, ErrInvalidArgument) hold.
func (e *FieldError) Unwrap() error { return ErrInvalidArgument }

func fieldError(field, format string, args ...any) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

func join[T ~string](vs []T) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

// ValidatePlaintext checks that b, the value of field, holds 1 to maxLen bytes.
// For Encrypt, maxLen is Spec.PlaintextLimit (MaxPlaintext for symmetric keys).
func ValidatePlaintext(field string, b []byte, maxLen int) error {
	if len(b) < 1 || len(b) > maxLen {
		return fieldError(field, "must be 1 to %d bytes, got %d", maxLen, len(b))
	}
	return nil
}

// ValidateAliasName checks the name of an alias being created or updated:
// "alias/" followed by 1 to 250 characters of [a-zA-Z0-9/_-]. Names under
// "alias/aws/" are reserved for keys managed by the service.
func ValidateAliasName(name string) error {
	if p := aliasSyntaxProblem(name); p != "" {
		return fieldError("AliasName", "%s", p)
	}
	if strings.HasPrefix(name, reservedAliasPrefix) {
		return fieldError("AliasName", "the %q prefix is reserved", reservedAliasPrefix)
	}
	return nil
}

// aliasSyntaxProblem describes what is wrong with name as an alias name, or
// returns "" if nothing is.
func aliasSyntaxProblem(name string) string {
	rest, ok := strings.CutPrefix(name, aliasPrefix)
	if !ok {
		return fmt.Sprintf("must start with %q", aliasPrefix)
	}
	if len(rest) < 1 || len(rest) > maxAliasSuffix {
		return fmt.Sprintf("must have 1 to %d characters after %q, got %d", maxAliasSuffix, aliasPrefix, len(rest))
	}
	for i := 0; i < len(rest); i++ {
		if !isAliasChar(rest[i]) {
			return fmt.Sprintf("character %d after %q is not one of a-z A-Z 0-9 / _ -", i+1, aliasPrefix)
		}
	}
	return ""
}

func isAliasChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '/' || c == '_' || c == '-'
}

// KeyRef is a reference to a key as a request names it. Exactly one of
// KeyID (canonical lowercase UUID, for a key id or key ARN) and Alias (the
// full "alias/NAME", for an alias name or alias ARN) is set. Region and
// Account are set for an ARN only: the cluster an ARN names, which the
// caller compares with its own.
type KeyRef struct {
	KeyID     string
	Alias     string
	Partition string
	Region    string
	Account   string
}

// ARNPartition is the partition of every ARN the broker makes
// (arn:aws:kms:REGION:ACCOUNT:...), whatever its region.
const ARNPartition = "aws"

// IsAlias reports whether the reference names an alias (by name or ARN)
// rather than a key.
func (r KeyRef) IsAlias() bool { return r.Alias != "" }

// OtherCluster says why an ARN names no key of the cluster whose ARNs
// carry region and account, or "" if it may (r is not an ARN, or its
// partition, region and account are the cluster's). The broker answers
// NotFound with it, whatever key id the ARN holds.
func (r KeyRef) OtherCluster(field, region, account string) string {
	if r.Region == "" || r.Partition == ARNPartition && r.Region == region && r.Account == account {
		return ""
	}
	return fmt.Sprintf("%s names partition %s, region %s and account %s; this cluster's keys are in partition %s, region %s, account %s",
		field, r.Partition, r.Region, r.Account, ARNPartition, region, account)
}

// AliasNotAllowed is the error for an alias, by name or ARN, in a field
// that takes a key id or key ARN only: the key of a change to a key, or
// the target of an alias. An alias can be moved, so a change made through
// one could reach another key than the caller looked at.
func AliasNotAllowed(field, alias string) error {
	return fieldError(field, "takes a key id or key ARN, not an alias (%s), as in AWS KMS: an alias can be moved to another key "+
		"between the moment the caller looked and this request; DescribeKey gives the key id", alias)
}

// String is the key id or alias name.
func (r KeyRef) String() string {
	if r.KeyID != "" {
		return r.KeyID
	}
	return r.Alias
}

// ParseKeyRef parses the KeyId field of a request, which may hold a key id
// ("1234abcd-12ab-34cd-56ef-1234567890ab"), a key ARN
// ("arn:aws:kms:us-east-1:111122223333:key/1234abcd-..."), an alias name
// ("alias/name") or an alias ARN ("arn:aws:kms:us-east-1:111122223333:alias/name").
// ARNs of any partition (aws, aws-cn, aws-us-gov, ...) are accepted; their
// partition, region and account are checked for form here and returned in
// the KeyRef, for the broker to compare with its own (OtherCluster). Alias references under the
// reserved "alias/aws/" prefix are accepted: they name nothing here, which is
// a lookup failure, not a malformed request.
func ParseKeyRef(s string) (KeyRef, error) {
	const field = "KeyId"
	switch {
	case s == "":
		return KeyRef{}, fieldError(field, "is required")
	case len(s) > MaxKeyRef:
		return KeyRef{}, fieldError(field, "must be at most %d bytes, got %d", MaxKeyRef, len(s))
	case strings.HasPrefix(s, "arn:"):
		return parseKeyARN(s)
	case strings.HasPrefix(s, aliasPrefix):
		if p := aliasSyntaxProblem(s); p != "" {
			return KeyRef{}, fieldError(field, "alias name %s", p)
		}
		return KeyRef{Alias: s}, nil
	}
	id, err := ParseKeyID(s)
	if err != nil {
		return KeyRef{}, fieldError(field, "must be a key id, key ARN, alias name or alias ARN")
	}
	return KeyRef{KeyID: FormatKeyID(id)}, nil
}

// parseKeyARN parses arn:PARTITION:kms:REGION:ACCOUNT:key/UUID and
// arn:PARTITION:kms:REGION:ACCOUNT:alias/NAME.
func parseKeyARN(s string) (KeyRef, error) {
	const field = "KeyId"
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" {
		return KeyRef{}, fieldError(field, "ARN must have the form arn:PARTITION:kms:REGION:ACCOUNT:RESOURCE")
	}
	partition, service, region, account, resource := parts[1], parts[2], parts[3], parts[4], parts[5]
	if p, ok := strings.CutPrefix(partition, "aws"); !ok || (p != "" && (p[0] != '-' || !isLowerAlnumDash(p[1:]))) {
		return KeyRef{}, fieldError(field, "ARN partition must be aws or aws-*")
	}
	if service != "kms" {
		return KeyRef{}, fieldError(field, "ARN service must be kms")
	}
	if !isLowerAlnumDash(region) {
		return KeyRef{}, fieldError(field, "ARN region must be lowercase letters, digits and hyphens")
	}
	if len(account) != 12 || strings.Trim(account, "0123456789") != "" {
		return KeyRef{}, fieldError(field, "ARN account must be 12 digits")
	}
	if id, ok := strings.CutPrefix(resource, "key/"); ok {
		b, err := ParseKeyID(id)
		if err != nil {
			return KeyRef{}, fieldError(field, "key ARN must end in key/ and a key id")
		}
		return KeyRef{KeyID: FormatKeyID(b), Partition: partition, Region: region, Account: account}, nil
	}
	if strings.HasPrefix(resource, aliasPrefix) {
		if p := aliasSyntaxProblem(resource); p != "" {
			return KeyRef{}, fieldError(field, "alias name in ARN %s", p)
		}
		return KeyRef{Alias: resource, Partition: partition, Region: region, Account: account}, nil
	}
	return KeyRef{}, fieldError(field, "ARN resource must be key/KEY_ID or alias/NAME")
}

func isLowerAlnumDash(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// PendingWindow returns the waiting period, in days, of ScheduleKeyDeletion
// for the requested days: 0 means DefaultPendingWindow, anything else must be
// 7 to 30.
func PendingWindow(days int32) (int32, error) {
	if days == 0 {
		return DefaultPendingWindow, nil
	}
	if days < MinPendingWindow || days > MaxPendingWindow {
		return 0, fieldError("PendingWindowInDays", "must be %d to %d days, got %d", MinPendingWindow, MaxPendingWindow, days)
	}
	return days, nil
}

// ValidateDeletionWindow checks PendingWindowInDays; see PendingWindow.
func ValidateDeletionWindow(days int32) error {
	_, err := PendingWindow(days)
	return err
}

// ValidateDescription checks a key description: valid UTF-8, at most
// MaxDescription characters (as AWS counts), no control characters.
// Empty is allowed.
func ValidateDescription(s string) error {
	if !utf8.ValidString(s) {
		return fieldError("Description", "must be valid UTF-8")
	}
	if n := utf8.RuneCountInString(s); n > MaxDescription {
		return fieldError("Description", "must be at most %d characters, got %d", MaxDescription, n)
	}
	if p := controlProblem(s); p != "" {
		return fieldError("Description", "%s", p)
	}
	return nil
}

// controlProblem names the first character of s that IsDisplayControl
// refuses, "" if none. Descriptions and tags are printed by hsmctl on
// terminals, where such a character (an escape sequence, a carriage
// return, a right-to-left override) could rewrite or reorder what an
// operator sees, so they are refused, where AWS accepts them.
func controlProblem(s string) string {
	if r, ok := FirstDisplayControl(s); ok {
		return fmt.Sprintf("must not contain control characters or bidirectional formatting characters (U+%04X); descriptions and tags are shown on terminals", r)
	}
	return ""
}

// FirstDisplayControl returns the first character of s that
// IsDisplayControl names, for an error that names it.
func FirstDisplayControl(s string) (rune, bool) {
	i := strings.IndexFunc(s, IsDisplayControl)
	if i < 0 {
		return 0, false
	}
	r, _ := utf8.DecodeRuneInString(s[i:])
	return r, true
}

// IsControl reports whether r is an ASCII control character (C0 or DEL).
// It is the replicated state's own check on the names and texts of keys,
// tags, grants and principals (cluster.checkText), and stays as it is so
// that log entries written by earlier versions apply the same way; the
// fronts refuse more (IsDisplayControl).
func IsControl(r rune) bool { return r < 0x20 || r == 0x7f }

// IsDisplayControl reports whether r changes how the text around it is
// shown instead of being shown itself: a control character (C0, DEL, or
// C1, U+0080 to U+009F, of which terminals read U+009B as the start of an
// escape sequence) or a bidirectional formatting character (U+061C,
// U+200E, U+200F, U+202A to U+202E, U+2066 to U+2069), which can show
// text in another order than it is stored. Requests are refused with one
// in a description, a tag or a grant's principal; hsmctl escapes them in
// what it prints.
func IsDisplayControl(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
}

// IsDisplayText reports whether s is valid UTF-8 without a character that
// IsDisplayControl names: text a terminal shows as it is stored, as the
// labels of PKCS#11 keys and data objects must be.
func IsDisplayText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, IsDisplayControl)
}

// ValidateTags checks the tags of CreateKey and TagResource: at most MaxTags,
// keys of 1 to 128 characters not starting with "aws:" (in any case, as the
// prefix is reserved), values of 0 to 256 characters, all valid UTF-8.
// Tags are checked in key order so the error is the same on every call.
func ValidateTags(tags map[string]string) error {
	if len(tags) > MaxTags {
		return fieldError("Tags", "must be at most %d tags, got %d", MaxTags, len(tags))
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if p := tagKeyProblem(k); p != "" {
			return fieldError("Tags", "%s", p)
		}
		v := tags[k]
		if !utf8.ValidString(v) {
			return fieldError("Tags", "tag value must be valid UTF-8")
		}
		if n := utf8.RuneCountInString(v); n > MaxTagValue {
			return fieldError("Tags", "tag value must be at most %d characters, got %d", MaxTagValue, n)
		}
		if p := controlProblem(v); p != "" {
			return fieldError("Tags", "tag value %s", p)
		}
	}
	return nil
}

// ValidateTagKeys checks the tag keys of UntagResource with the same rules
// as ValidateTags.
func ValidateTagKeys(keys []string) error {
	if len(keys) == 0 {
		return fieldError("TagKeys", "is required")
	}
	if len(keys) > MaxTags {
		return fieldError("TagKeys", "must be at most %d keys, got %d", MaxTags, len(keys))
	}
	for _, k := range keys {
		if p := tagKeyProblem(k); p != "" {
			return fieldError("TagKeys", "%s", p)
		}
	}
	return nil
}

func tagKeyProblem(k string) string {
	if !utf8.ValidString(k) {
		return "tag key must be valid UTF-8"
	}
	if n := utf8.RuneCountInString(k); n < 1 || n > MaxTagKey {
		return fmt.Sprintf("tag key must be 1 to %d characters, got %d", MaxTagKey, n)
	}
	if len(k) >= 4 && strings.EqualFold(k[:4], "aws:") {
		return `tag keys starting with "aws:" are reserved`
	}
	if p := controlProblem(k); p != "" {
		return "tag key " + p
	}
	return ""
}

// ValidateRandomBytes checks NumberOfBytes of GenerateRandom: 1 to 1024.
func ValidateRandomBytes(n int64) error {
	if n < 1 || n > MaxRandomBytes {
		return fieldError("NumberOfBytes", "must be 1 to %d, got %d", MaxRandomBytes, n)
	}
	return nil
}

// DataKeyBytes returns the length of the data key GenerateDataKey asks for.
// Exactly one of spec and n must be set (n = 0 means unset).
func DataKeyBytes(spec DataKeySpec, n int64) (int, error) {
	switch {
	case spec == "" && n == 0:
		return 0, fieldError("KeySpec", "one of KeySpec or NumberOfBytes is required")
	case spec != "" && n != 0:
		return 0, fieldError("KeySpec", "only one of KeySpec or NumberOfBytes may be set")
	case spec != "":
		if !spec.Valid() {
			return 0, fieldError("KeySpec", "must be one of %s", join(AllDataKeySpecs))
		}
		return spec.Bytes(), nil
	}
	if err := ValidateRandomBytes(n); err != nil {
		return 0, err
	}
	return int(n), nil
}

// ValidateCreate checks the KeySpec and KeyUsage of CreateKey and returns the
// usage to create the key with, filling in the spec's default when usage is
// empty. RSA keys have no default usage. An empty spec is rejected: callers
// that follow AWS KMS default it to SpecSymmetricDefault first.
func ValidateCreate(spec Spec, usage Usage) (Usage, error) {
	if !spec.Valid() {
		return "", fieldError("KeySpec", "must be one of %s", join(Specs))
	}
	if usage == "" {
		usage = spec.DefaultUsage()
		if usage == "" {
			return "", fieldError("KeyUsage", "is required for %s keys: one of %s", spec, join(spec.AllowedUsages()))
		}
	}
	if !usage.Valid() {
		return "", fieldError("KeyUsage", "must be one of %s", join(AllUsages))
	}
	if !spec.AllowsUsage(usage) {
		return "", fieldError("KeyUsage", "%s keys support only %s, got %s", spec, join(spec.AllowedUsages()), usage)
	}
	return usage, nil
}

// ValidateMessage checks the Message of Sign and Verify. An empty mt means
// MessageRaw. A raw message holds 1 to 4096 bytes; a digest is exactly as
// long as the hash of alg.
func ValidateMessage(mt MessageType, alg SigningAlgorithm, msg []byte) error {
	switch mt {
	case "", MessageRaw:
		return ValidatePlaintext("Message", msg, MaxPlaintext)
	case MessageDigest:
		if !alg.Valid() {
			return fieldError("SigningAlgorithm", "must be one of %s", join(AllSigningAlgorithms))
		}
		if size := alg.Hash().Size(); len(msg) != size {
			return fieldError("Message", "a %s digest must be %d bytes, got %d", alg, size, len(msg))
		}
		return nil
	}
	return fieldError("MessageType", "must be one of %s", join(AllMessageTypes))
}

// ValidateLimit checks that v, the value of field, is 1 to maxV.
func ValidateLimit(field string, v, maxV int32) error {
	if v < 1 || v > maxV {
		return fieldError(field, "must be 1 to %d, got %d", maxV, v)
	}
	return nil
}

// The positions a page token holds: where the previous page of a list
// ended. A token that decodes to anything else was not issued by the
// broker, and is refused rather than read as a position past the end.

// IsKeyIDPosition reports whether s is a key id in canonical form (ListKeys).
func IsKeyIDPosition(s string) bool {
	id, err := ParseKeyID(s)
	return err == nil && FormatKeyID(id) == s
}

// IsAliasPosition reports whether s is an alias name (ListAliases).
func IsAliasPosition(s string) bool {
	ref, err := ParseKeyRef(s)
	return err == nil && ref.Alias == s
}

// IsIndexPosition reports whether s is a positive index in canonical
// decimal form (ListKeyVersions).
func IsIndexPosition(s string) bool {
	i, err := strconv.Atoi(s)
	return err == nil && i > 0 && strconv.Itoa(i) == s
}

// PageSize returns the number of entries a List call returns per page for the
// requested Limit: 0 means DefaultPageSize, anything else must be 1 to 1000.
func PageSize(limit int32) (int, error) {
	if limit == 0 {
		return DefaultPageSize, nil
	}
	if err := ValidateLimit("Limit", limit, MaxPageSize); err != nil {
		return 0, err
	}
	return int(limit), nil
}
