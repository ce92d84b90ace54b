package awskms

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// The AWS KMS external key store (XKS) proxy API, version 1: AWS KMS calls
//
//	POST {PathPrefix}/kms/xks/v1/keys/{externalKeyId}/metadata   GetKeyMetadata
//	POST {PathPrefix}/kms/xks/v1/keys/{externalKeyId}/encrypt    Encrypt
//	POST {PathPrefix}/kms/xks/v1/keys/{externalKeyId}/decrypt    Decrypt
//	POST {PathPrefix}/kms/xks/v1/health                          GetHealthStatus
//
// with application/json bodies, signed with SigV4 for the service
// "kms-xks-proxy" with credentials configured into both sides. Errors are
// {"errorName": ..., "errorMessage": ...} with the specification's HTTP
// statuses.
//
// An external key id is a broker key id, or the name of an alias without
// its "alias/" prefix (the id may not contain '/'), of a SYMMETRIC_DEFAULT
// key. A key id is the better choice: AWS KMS binds its key to the
// external key id for good, and an alias can be moved. The key version is
// carried in ciphertextMetadata (see broker.XKSEncrypt), so ciphertexts
// keep decrypting after the key rotates.

// XKSConfig configures the XKS proxy API of a Handler.
type XKSConfig struct {
	// PathPrefix precedes "/kms/xks/v1" in every XKS URI: AWS KMS's
	// XksProxyUriPath is PathPrefix + "/kms/xks/v1". Empty, or "/" and
	// segments of letters, digits, '/', '-' and '_', without a trailing
	// '/'; the whole XksProxyUriPath is at most 128 characters.
	PathPrefix string
	// Credentials authenticate AWS KMS to the proxy. Required. They are
	// the external key store's proxy authentication credential
	// (GenerateXKSAccessKey), distinct from the TrentService access keys.
	Credentials Credentials
	// Region is the AWS region whose KMS calls the proxy, as its
	// signatures name it (default the Service's region).
	Region string
	// Vendor and Model name the proxy in GetHealthStatus (defaults
	// "hsmbroker" and "hsmbroker XKS proxy").
	Vendor string
	Model  string
}

const xksAPIPath = "/kms/xks/v1"

// XKS error names and their HTTP statuses, from the specification.
const (
	xksValidation           = "ValidationException"
	xksInvalidState         = "InvalidStateException"
	xksInvalidCiphertext    = "InvalidCiphertextException"
	xksInvalidKeyUsage      = "InvalidKeyUsageException"
	xksAuthenticationFailed = "AuthenticationFailedException"
	xksAccessDenied         = "AccessDeniedException"
	xksKeyNotFound          = "KeyNotFoundException"
	xksInvalidURIPath       = "InvalidUriPathException"
	xksThrottling           = "ThrottlingException"
	xksUnsupported          = "UnsupportedOperationException"
	xksDependencyTimeout    = "DependencyTimeoutException"
	xksInternal             = "InternalException"
)

type xksServer struct {
	h        *Handler
	base     string
	verifier verifier
	vendor   string
	model    string
}

func newXKSServer(h *Handler, cfg XKSConfig, maxSkew time.Duration, now func() time.Time) (*xksServer, error) {
	if cfg.Credentials == nil {
		return nil, errors.New("awskms: XKS credentials are required")
	}
	p := cfg.PathPrefix
	if p != "" && (p[0] != '/' || strings.HasSuffix(p, "/") || strings.Contains(p, "//")) {
		return nil, fmt.Errorf("awskms: XKS path prefix %q must be empty or /segment[/segment...]", p)
	}
	for _, c := range p {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '/' || c == '-' || c == '_') {
			return nil, fmt.Errorf("awskms: XKS path prefix %q may hold only letters, digits, '/', '-' and '_'", p)
		}
	}
	if len(p+xksAPIPath) > 128 {
		return nil, fmt.Errorf("awskms: XKS URI path %q is longer than 128 characters", p+xksAPIPath)
	}
	if cfg.Region == "" {
		cfg.Region = h.region
	}
	if cfg.Vendor == "" {
		cfg.Vendor = "hsmbroker"
	}
	if cfg.Model == "" {
		cfg.Model = "hsmbroker XKS proxy"
	}
	return &xksServer{h: h, base: p + xksAPIPath, vendor: cfg.Vendor, model: cfg.Model,
		verifier: verifier{creds: cfg.Credentials, service: "kms-xks-proxy", region: cfg.Region, maxSkew: maxSkew, now: now,
			hosts: h.trent.hosts}}, nil
}

// owns tells whether path is the XKS API's to answer: a path under its
// base, or one that names the XKS API under another prefix (a proxy URI
// path configured wrong in AWS KMS), which is answered with the
// specification's InvalidUriPathException rather than as TrentService.
func (x *xksServer) owns(path string) bool {
	return path == x.base || strings.HasPrefix(path, x.base+"/") ||
		strings.HasSuffix(path, xksAPIPath) || strings.Contains(path, xksAPIPath+"/")
}

func xksErr(status int, name, format string, args ...any) *apiError {
	return &apiError{status, name, fmt.Sprintf(format, args...)}
}

// route names the operation and external key id of a path.
func (x *xksServer) route(path string) (op, keyID string) {
	rest, ok := strings.CutPrefix(path, x.base)
	if !ok {
		return "", ""
	}
	if rest == "/health" {
		return "GetHealthStatus", ""
	}
	k, ok := strings.CutPrefix(rest, "/keys/")
	if !ok {
		return "", ""
	}
	id, action, ok := strings.Cut(k, "/")
	if !ok || id == "" {
		return "", ""
	}
	switch action {
	case "metadata":
		return "GetKeyMetadata", id
	case "encrypt":
		return "Encrypt", id
	case "decrypt":
		return "Decrypt", id
	}
	return "", ""
}

// xksRequestMetadata is the requestMetadata member of every request.
type xksRequestMetadata struct {
	AwsPrincipalArn string `json:"awsPrincipalArn"`
	AwsSourceVpc    string `json:"awsSourceVpc,omitempty"`
	AwsSourceVpce   string `json:"awsSourceVpce,omitempty"`
	KmsKeyArn       string `json:"kmsKeyArn,omitempty"`
	KmsOperation    string `json:"kmsOperation"`
	KmsRequestID    string `json:"kmsRequestId"`
	KmsViaService   string `json:"kmsViaService,omitempty"`
}

type xksRequest struct {
	RequestMetadata *xksRequestMetadata `json:"requestMetadata"`

	Plaintext                             string `json:"plaintext"`
	Ciphertext                            string `json:"ciphertext"`
	CiphertextMetadata                    string `json:"ciphertextMetadata"`
	InitializationVector                  string `json:"initializationVector"`
	AuthenticationTag                     string `json:"authenticationTag"`
	AdditionalAuthenticatedData           string `json:"additionalAuthenticatedData"`
	EncryptionAlgorithm                   string `json:"encryptionAlgorithm"`
	CiphertextDataIntegrityValueAlgorithm string `json:"ciphertextDataIntegrityValueAlgorithm"`
}

type xksMetadataResponse struct {
	KeySpec   string   `json:"keySpec"`
	KeyUsage  []string `json:"keyUsage"`
	KeyStatus string   `json:"keyStatus"`
}

type xksEncryptResponse struct {
	Ciphertext                   []byte `json:"ciphertext"`
	CiphertextMetadata           []byte `json:"ciphertextMetadata,omitempty"`
	InitializationVector         []byte `json:"initializationVector"`
	AuthenticationTag            []byte `json:"authenticationTag"`
	CiphertextDataIntegrityValue []byte `json:"ciphertextDataIntegrityValue,omitempty"`
}

type xksDecryptResponse struct {
	Plaintext []byte `json:"plaintext"`
}

type xksEKM struct {
	ID           string `json:"id"`
	Model        string `json:"model"`
	HealthStatus string `json:"healthStatus"`
}

type xksHealthResponse struct {
	XksProxyFleetSize int      `json:"xksProxyFleetSize"`
	XksProxyVendor    string   `json:"xksProxyVendor"`
	XksProxyModel     string   `json:"xksProxyModel"`
	EkmVendor         string   `json:"ekmVendor"`
	EkmFleetDetails   []xksEKM `json:"ekmFleetDetails"`
}

// xksCall is what one request's log line says of it, filled in as the
// request is read: the same line for an answer and for an error, so that a
// failed call can be matched with AWS CloudTrail by its kmsRequestId too.
type xksCall struct {
	start     time.Time
	reqID     string
	op        string
	keyID     string
	principal string
	md        *xksRequestMetadata // nil until the body is decoded
}

func (x *xksServer) serve(w http.ResponseWriter, r *http.Request, reqID string) {
	c := &xksCall{start: time.Now(), reqID: reqID}
	c.op, c.keyID = x.route(r.URL.Path)
	if c.op == "" {
		x.refuseUnauthenticated(w, r, c, xksErr(http.StatusNotFound, xksInvalidURIPath, "no XKS API at this URI path; AWS KMS's XksProxyUriPath must be %s", x.base))
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		x.refuseUnauthenticated(w, r, c, xksErr(http.StatusMethodNotAllowed, xksValidation, "XKS API requests must be POST"))
		return
	}
	var pre *preAuth
	authFailed := func(aerr *authError) {
		x.h.authRefused(r, pre, aerr)
		x.writeError(w, r, c, xksErr(http.StatusUnauthorized, xksAuthenticationFailed, "%s: %s", aerr.exception, aerr.message))
	}
	pre, aerr := x.verifier.verifyHeaders(r)
	if aerr != nil {
		authFailed(aerr)
		return
	}
	body, release, err := x.h.readBody(w, r)
	defer release()
	if err != nil {
		xerr := xksErr(http.StatusBadRequest, xksValidation, "the request body is too large or unreadable")
		if err == errBusy {
			xerr = xksErr(http.StatusTooManyRequests, xksThrottling, "%s", errBusy.message)
		}
		x.h.refusedUnsigned(r, pre, xerr.exception)
		x.writeError(w, r, c, xerr)
		return
	}
	principal, aerr := x.verifier.verifyBody(pre, r, body)
	if aerr != nil {
		authFailed(aerr)
		return
	}
	c.principal = principal
	ctx := broker.WithPrincipal(r.Context(), principal)
	// One strict reading, as for TrentService (decodeStrict): a member
	// repeated or spelled in another letter case is refused.
	var req xksRequest
	if err := decodeStrict(body, &req); err != nil {
		msg := "the request body is not a JSON object of this operation's members"
		var ae *apiError
		if errors.As(err, &ae) {
			msg = ae.message
		}
		x.writeError(w, r, c, xksErr(http.StatusBadRequest, xksValidation, "%s", msg))
		return
	}
	c.md = req.RequestMetadata
	if err := req.RequestMetadata.check(c.op); err != nil {
		x.writeError(w, r, c, err)
		return
	}
	if x.h.authorize != nil && c.op != "GetHealthStatus" {
		if err := x.h.authorize(ctx, principal, "kms-xks-proxy:"+c.op); err != nil {
			x.writeError(w, r, c, xksErr(http.StatusForbidden, xksAccessDenied, "%s is not authorized to perform %s", principal, c.op))
			return
		}
	}
	// GetHealthStatus reports the node's readiness; the others read its
	// state or use its HSM, which a node that is not ready does not.
	if c.op != "GetHealthStatus" {
		if err := x.h.svc.ReadinessGate(); err != nil {
			x.writeError(w, r, c, err)
			return
		}
	}
	var out any
	switch c.op {
	case "GetHealthStatus":
		out, err = x.health(ctx)
	case "GetKeyMetadata":
		out, err = x.metadata(ctx, c.keyID)
	case "Encrypt":
		out, err = x.encrypt(ctx, c.keyID, &req)
	case "Decrypt":
		out, err = x.decrypt(ctx, c.keyID, &req)
	}
	if err != nil {
		x.writeError(w, r, c, err)
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		x.writeError(w, r, c, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	x.logCall(r.Context(), slog.LevelInfo, c, slog.Int("status", http.StatusOK))
}

// logCall writes a request's one log line: what it asked, of which key,
// for whom in AWS (the request metadata, once decoded) and how long it took,
// then attrs (its outcome).
func (x *xksServer) logCall(ctx context.Context, level slog.Level, c *xksCall, attrs ...slog.Attr) {
	line := []slog.Attr{slog.String("operation", c.op), slog.String("external_key_id", c.keyID),
		slog.String("principal", c.principal), slog.String("request_id", c.reqID)}
	if md := c.md; md != nil {
		line = append(line, slog.String("kms_request_id", netlimit.Truncate(md.KmsRequestID, 256)), slog.String("kms_operation", netlimit.Truncate(md.KmsOperation, 256)),
			slog.String("aws_principal_arn", netlimit.Truncate(md.AwsPrincipalArn, 512)), slog.String("kms_key_arn", netlimit.Truncate(md.KmsKeyArn, 512)))
	}
	line = append(line, attrs...)
	line = append(line, slog.Duration("took", time.Since(c.start)))
	x.h.logRequest(ctx, level, "xks request", c.principal, line...)
}

// check enforces the members the specification marks REQUIRED. Their
// contents are opaque: kmsRequestId in particular is never parsed.
func (md *xksRequestMetadata) check(op string) error {
	missing := func(f string) error {
		return xksErr(http.StatusBadRequest, xksValidation, "requestMetadata.%s is required", f)
	}
	switch {
	case op == "GetHealthStatus":
		// The specification raises ValidationException for every
		// operation but this one: a health check is answered whatever
		// metadata it carries.
		return nil
	case md == nil:
		return xksErr(http.StatusBadRequest, xksValidation, "requestMetadata is required")
	case md.KmsRequestID == "":
		return missing("kmsRequestId")
	case md.KmsOperation == "":
		return missing("kmsOperation")
	case md.AwsPrincipalArn == "":
		return missing("awsPrincipalArn")
	case (op == "Encrypt" || op == "Decrypt") && md.KmsKeyArn == "":
		return missing("kmsKeyArn")
	}
	return nil
}

// keyRef maps an external key id to the key reference the core takes.
func xksKeyRef(id string) (string, error) {
	if len(id) > 128 {
		return "", xksErr(http.StatusBadRequest, xksValidation, "externalKeyId is longer than 128 characters")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "", xksErr(http.StatusBadRequest, xksValidation, "externalKeyId may hold only letters, digits, '-', '.' and '_'")
		}
	}
	if b, err := keys.ParseKeyID(id); err == nil {
		return keys.FormatKeyID(b), nil
	}
	if strings.Contains(id, ".") {
		return "", xksErr(http.StatusNotFound, xksKeyNotFound, "no key or alias is named %s", id)
	}
	return "alias/" + id, nil
}

func b64(field, s string, required bool) ([]byte, error) {
	if s == "" {
		if required {
			return nil, xksErr(http.StatusBadRequest, xksValidation, "%s is required", field)
		}
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, xksErr(http.StatusBadRequest, xksValidation, "%s is not valid base64", field)
	}
	return b, nil
}

func checkAlgorithm(alg string) error {
	switch alg {
	case "AES_GCM":
		return nil
	case "":
		return xksErr(http.StatusBadRequest, xksValidation, "encryptionAlgorithm is required")
	}
	return xksErr(http.StatusBadRequest, xksValidation, "encryptionAlgorithm must be AES_GCM")
}

func (x *xksServer) metadata(ctx context.Context, id string) (*xksMetadataResponse, error) {
	ref, err := xksKeyRef(id)
	if err != nil {
		return nil, err
	}
	resp, err := x.h.svc.DescribeKey(ctx, &pb.DescribeKeyRequest{KeyId: ref})
	if err != nil {
		return nil, err
	}
	md := resp.GetKeyMetadata()
	out := &xksMetadataResponse{KeySpec: enumName(md.GetKeySpec(), "KEY_SPEC_"), KeyStatus: "DISABLED"}
	if md.GetKeySpec() == pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT {
		out.KeySpec = "AES_256"
	}
	// The operations the key supports among the specification's. A MAC
	// key, a raw AES key or an RSA encryption key supports none of them
	// (this proxy's Encrypt and Decrypt take SYMMETRIC_DEFAULT keys only),
	// so AWS KMS refuses to make a key of it.
	switch {
	case md.GetKeyUsage() == pb.KeyUsage_KEY_USAGE_ENCRYPT_DECRYPT && md.GetKeySpec() == pb.KeySpec_KEY_SPEC_SYMMETRIC_DEFAULT:
		out.KeyUsage = []string{"ENCRYPT", "DECRYPT"}
	case md.GetKeyUsage() == pb.KeyUsage_KEY_USAGE_SIGN_VERIFY:
		out.KeyUsage = []string{"SIGN", "VERIFY"}
	default:
		out.KeyUsage = []string{}
	}
	if md.GetKeyState() == pb.KeyState_KEY_STATE_ENABLED {
		out.KeyStatus = "ENABLED"
	}
	return out, nil
}

func (x *xksServer) encrypt(ctx context.Context, id string, req *xksRequest) (*xksEncryptResponse, error) {
	ref, err := xksKeyRef(id)
	if err != nil {
		return nil, err
	}
	if err := checkAlgorithm(req.EncryptionAlgorithm); err != nil {
		return nil, err
	}
	switch req.CiphertextDataIntegrityValueAlgorithm {
	case "", "SHA_256":
	default:
		return nil, xksErr(http.StatusBadRequest, xksValidation, "ciphertextDataIntegrityValueAlgorithm must be SHA_256")
	}
	pt, err := b64("plaintext", req.Plaintext, true)
	if err != nil {
		return nil, err
	}
	defer clear(pt)
	aad, err := b64("additionalAuthenticatedData", req.AdditionalAuthenticatedData, false)
	if err != nil {
		return nil, err
	}
	_, c, err := x.h.svc.XKSEncrypt(ctx, ref, pt, aad)
	if err != nil {
		return nil, err
	}
	out := &xksEncryptResponse{Ciphertext: c.Ciphertext, CiphertextMetadata: c.Metadata, InitializationVector: c.IV, AuthenticationTag: c.Tag}
	if req.CiphertextDataIntegrityValueAlgorithm != "" {
		// Appendix C: hash the output first, then prove it decrypts, so
		// that corruption after the check cannot go unnoticed.
		h := sha256.New()
		for _, part := range [][]byte{aad, c.Metadata, c.IV, c.Ciphertext, c.Tag} {
			h.Write(part)
		}
		out.CiphertextDataIntegrityValue = h.Sum(nil)
		_, back, err := x.h.svc.XKSDecrypt(ctx, ref, c, aad)
		if err != nil || !bytes.Equal(back, pt) {
			clear(back)
			return nil, fmt.Errorf("XKS encrypt of key %s did not decrypt back: %w", ref, err)
		}
		clear(back)
	}
	return out, nil
}

func (x *xksServer) decrypt(ctx context.Context, id string, req *xksRequest) (*xksDecryptResponse, error) {
	ref, err := xksKeyRef(id)
	if err != nil {
		return nil, err
	}
	if err := checkAlgorithm(req.EncryptionAlgorithm); err != nil {
		return nil, err
	}
	var c broker.XKSCiphertext
	for _, f := range []struct {
		name     string
		val      string
		dst      *[]byte
		required bool
	}{
		{"ciphertext", req.Ciphertext, &c.Ciphertext, true},
		{"initializationVector", req.InitializationVector, &c.IV, true},
		{"authenticationTag", req.AuthenticationTag, &c.Tag, true},
		{"ciphertextMetadata", req.CiphertextMetadata, &c.Metadata, false},
	} {
		if *f.dst, err = b64(f.name, f.val, f.required); err != nil {
			return nil, err
		}
	}
	aad, err := b64("additionalAuthenticatedData", req.AdditionalAuthenticatedData, false)
	if err != nil {
		return nil, err
	}
	_, pt, err := x.h.svc.XKSDecrypt(ctx, ref, c, aad)
	if err != nil {
		return nil, err
	}
	return &xksDecryptResponse{Plaintext: pt}, nil
}

// health is a deep check: this node must be ready and its HSM must
// produce random bytes. The fleet is the cluster: every node is both a
// proxy and a key manager.
func (x *xksServer) health(ctx context.Context) (*xksHealthResponse, error) {
	if ok, reason := x.h.svc.Ready(ctx); !ok {
		return nil, xksErr(http.StatusInternalServerError, xksInternal, "this node cannot serve: %s", reason)
	}
	if _, err := x.h.svc.GenerateRandom(ctx, &pb.GenerateRandomRequest{NumberOfBytes: 16}); err != nil {
		return nil, err
	}
	st, err := x.h.svc.GetClusterStatus(ctx, &pb.GetClusterStatusRequest{})
	if err != nil {
		return nil, err
	}
	out := &xksHealthResponse{XksProxyFleetSize: max(len(st.GetNodes()), 1), XksProxyVendor: x.vendor, XksProxyModel: x.model}
	for _, n := range st.GetNodes() {
		p := n.GetPartition()
		e := xksEKM{ID: n.GetId(), Model: strings.TrimSpace(p.GetHsmModel() + " " + p.GetFirmwareVersion()), HealthStatus: "UNAVAILABLE"}
		if n.GetId() == st.GetNodeId() {
			e.HealthStatus = "ACTIVE" // checked just above
			out.EkmVendor = p.GetManufacturer()
		} else if n.GetHealthy() {
			e.HealthStatus = "ACTIVE"
		}
		if e.Model == "" {
			e.Model = "unknown"
		}
		out.EkmFleetDetails = append(out.EkmFleetDetails, e)
	}
	if len(out.EkmFleetDetails) > 10 {
		out.EkmFleetDetails = out.EkmFleetDetails[:10]
	}
	if len(out.EkmFleetDetails) == 0 {
		out.EkmFleetDetails = []xksEKM{{ID: st.GetNodeId(), Model: "unknown", HealthStatus: "ACTIVE"}}
	}
	if out.EkmVendor == "" {
		out.EkmVendor = "unknown"
	}
	return out, nil
}

// xksClassify maps any error to the specification's status and name.
func xksClassify(err error) (int, string, string) {
	var ae *apiError
	if errors.As(err, &ae) && isXKSName(ae.exception) {
		return ae.status, ae.exception, ae.message
	}
	_, exc, msg := broker.Classify(err)
	switch exc {
	case broker.ExcNotFound:
		return http.StatusNotFound, xksKeyNotFound, msg
	case broker.ExcDisabled, broker.ExcInvalidState:
		return http.StatusBadRequest, xksInvalidState, msg
	case broker.ExcInvalidCiphertext, broker.ExcIncorrectKey:
		return http.StatusBadRequest, xksInvalidCiphertext, msg
	case broker.ExcInvalidKeyUsage:
		return http.StatusBadRequest, xksInvalidKeyUsage, msg
	case broker.ExcUnsupportedOperation:
		return http.StatusNotImplemented, xksUnsupported, msg
	case broker.ExcThrottling:
		return http.StatusTooManyRequests, xksThrottling, msg
	case broker.ExcDependencyTimeout:
		return http.StatusServiceUnavailable, xksDependencyTimeout, msg
	case broker.ExcAccessDenied:
		return http.StatusForbidden, xksAccessDenied, msg
	case broker.ExcInternal:
		return http.StatusInternalServerError, xksInternal, msg
	}
	return http.StatusBadRequest, xksValidation, msg
}

func isXKSName(s string) bool {
	switch s {
	case xksValidation, xksInvalidState, xksInvalidCiphertext, xksInvalidKeyUsage, xksAuthenticationFailed, xksAccessDenied,
		xksKeyNotFound, xksInvalidURIPath, xksThrottling, xksUnsupported, xksDependencyTimeout, xksInternal:
		return true
	}
	return false
}

// refuseUnauthenticated answers a request refused before it proved an
// identity (Handler.refusedUnproven).
func (x *xksServer) refuseUnauthenticated(w http.ResponseWriter, r *http.Request, c *xksCall, err *apiError) {
	x.h.refusedUnproven(r, err.exception)
	x.writeError(w, r, c, err)
}

// writeError answers with the specification's error body. The message
// is limited to printable ASCII and 511 characters, as it requires.
func (x *xksServer) writeError(w http.ResponseWriter, r *http.Request, c *xksCall, err error) {
	status, name, msg := xksClassify(err)
	level := slog.LevelInfo
	attrs := []slog.Attr{slog.Int("status", status), slog.String("error_name", name)}
	if status == http.StatusInternalServerError {
		level = slog.LevelError
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	x.logCall(r.Context(), level, c, attrs...)
	b, _ := json.Marshal(struct {
		ErrorName    string `json:"errorName"`
		ErrorMessage string `json:"errorMessage,omitempty"`
	}{name, printableASCII(msg, 511)})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func printableASCII(s string, n int) string {
	b := make([]byte, 0, min(len(s), n))
	for i := 0; i < len(s) && len(b) < n; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		b = append(b, c)
	}
	return string(b)
}
