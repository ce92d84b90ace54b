package awskms

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"hash"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hsmbroker/hsmbroker/internal/netlimit"
)

// AWS Signature Version 4, as the verifying side. A request carries
//
//	Authorization: AWS4-HMAC-SHA256 Credential=AKID/YYYYMMDD/REGION/SERVICE/aws4_request,
//	    SignedHeaders=host;x-amz-date;..., Signature=<64 hex digits>
//
// and the signature is HMAC-SHA256, under a key derived from the secret and
// the credential scope, of a string that hashes the canonical form of the
// request (method, path, query, the signed headers, and the SHA-256 of the
// body). The verifier rebuilds that string from the request as received and
// compares in constant time.

const (
	sigV4Algorithm  = "AWS4-HMAC-SHA256"
	sigV4Terminator = "aws4_request"
	amzDateFormat   = "20060102T150405Z"
	scopeDateFormat = "20060102"
	// maxAuthorizationHeader bounds the header the parser looks at; real
	// ones are a few hundred bytes.
	maxAuthorizationHeader = 8 << 10
)

// Exception names AWS answers authentication failures with.
const (
	excMissingAuthToken     = "MissingAuthenticationTokenException"
	excIncompleteSignature  = "IncompleteSignatureException"
	excInvalidSignature     = "InvalidSignatureException"
	excUnrecognizedClient   = "UnrecognizedClientException"
	msgSignatureMismatch    = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
	msgUnrecognizedClient   = "The security token included in the request is invalid."
	msgMissingAuthorization = "Missing Authentication Token"
)

// authError is a refused request, with AWS's exception name.
type authError struct {
	exception string
	message   string
}

func (e *authError) Error() string { return e.exception + ": " + e.message }

func incomplete(format string, args ...any) *authError {
	return &authError{excIncompleteSignature, fmt.Sprintf(format, args...)}
}

func invalidSig(format string, args ...any) *authError {
	return &authError{excInvalidSignature, fmt.Sprintf(format, args...)}
}

// sigV4Auth is a parsed Authorization header.
type sigV4Auth struct {
	accessKeyID   string
	date          string // YYYYMMDD of the credential scope
	region        string
	service       string
	signedHeaders []string // lower case, sorted, unique
	signedRaw     string   // signedHeaders joined by ';', as received
	signature     string   // 64 lower-case hex digits
}

// parseAuthorization parses a SigV4 Authorization header. Every failure is
// an IncompleteSignatureException.
func parseAuthorization(h string) (sigV4Auth, *authError) {
	var a sigV4Auth
	if len(h) > maxAuthorizationHeader {
		return a, incomplete("Authorization header is longer than %d bytes", maxAuthorizationHeader)
	}
	rest, ok := strings.CutPrefix(h, sigV4Algorithm)
	if !ok || (rest != "" && rest[0] != ' ') {
		return a, incomplete("Authorization header must start with %s; other algorithms are not supported", sigV4Algorithm)
	}
	var cred, signed, sig string
	var haveCred, haveSigned, haveSig bool
	for more := true; more; {
		var part string
		part, rest, more = strings.Cut(rest, ",")
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return a, incomplete("Authorization header component %q is not of the form key=value", netlimit.Truncate(part, 32))
		}
		var dst *string
		var seen *bool
		switch k {
		case "Credential":
			dst, seen = &cred, &haveCred
		case "SignedHeaders":
			dst, seen = &signed, &haveSigned
		case "Signature":
			dst, seen = &sig, &haveSig
		default:
			return a, incomplete("Authorization header has an unknown component %q", netlimit.Truncate(k, 32))
		}
		if *seen {
			return a, incomplete("Authorization header has %s twice", k)
		}
		*dst, *seen = v, true
	}
	switch {
	case !haveCred:
		return a, incomplete("Authorization header requires 'Credential' parameter.")
	case !haveSigned:
		return a, incomplete("Authorization header requires 'SignedHeaders' parameter.")
	case !haveSig:
		return a, incomplete("Authorization header requires 'Signature' parameter.")
	}
	var parts [5]string
	n := 0
	for more := true; more; n++ {
		if n == len(parts) {
			n++ // too many components
			break
		}
		parts[n], cred, more = strings.Cut(cred, "/")
	}
	if n != 5 || parts[0] == "" || parts[2] == "" || parts[3] == "" || parts[4] != sigV4Terminator {
		return a, incomplete("Credential must have the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/%s", sigV4Terminator)
	}
	if _, err := time.Parse(scopeDateFormat, parts[1]); err != nil || len(parts[1]) != 8 {
		return a, incomplete("Credential date %q is not YYYYMMDD", netlimit.Truncate(parts[1], 16))
	}
	a.accessKeyID, a.date, a.region, a.service = parts[0], parts[1], parts[2], parts[3]
	if signed == "" {
		return a, incomplete("SignedHeaders is empty")
	}
	a.signedHeaders = strings.Split(signed, ";")
	a.signedRaw = signed
	for i, name := range a.signedHeaders {
		if !isHeaderToken(name) || strings.ToLower(name) != name {
			return a, incomplete("SignedHeaders entry %d is not a lower-case header name", i+1)
		}
		if i > 0 && a.signedHeaders[i-1] >= name {
			return a, incomplete("SignedHeaders must be sorted and unique")
		}
	}
	if !containsString(a.signedHeaders, "host") {
		return a, incomplete("'Host' must be a 'SignedHeader' in the AWS Authorization.")
	}
	if len(sig) != 2*sha256.Size || !isLowerHex(sig) {
		return a, incomplete("Signature must be %d lower-case hex digits", 2*sha256.Size)
	}
	a.signature = sig
	return a, nil
}

// verifier checks the SigV4 signatures of requests to one service in one
// region.
type verifier struct {
	creds   Credentials
	service string
	region  string
	maxSkew time.Duration
	now     func() time.Time
	keys    signingKeyCache
	// requireSigned are headers, besides host and the date, that every
	// request must sign (lower case): x-amz-target for TrentService.
	requireSigned []string
	// refuseXKS refuses external key store proxy credentials
	// (TrentService takes only its own keys).
	refuseXKS bool
	// hosts, when not nil, are the host names (lower case, no port) a
	// request may be signed for.
	hosts map[string]bool
}

// hostSet is Config.Hosts as verifier.hosts: nil for none.
func hostSet(hosts []string) map[string]bool {
	if len(hosts) == 0 {
		return nil
	}
	m := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		m[hostName(h)] = true
	}
	return m
}

// hostName is a Host header's (or a configured name's) host, lower case,
// without its port, brackets or a trailing dot.
func hostName(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.ToLower(strings.TrimSuffix(strings.Trim(h, "[]"), "."))
}

// signingKeyCache keeps derived signing keys, which change once a day per
// access key, as SDKs do on the signing side: deriving one is four HMACs.
// An entry is used only with the secret it was derived from, so a changed
// secret takes effect at once.
type signingKeyCache struct {
	mu sync.Mutex
	m  map[signingScope]*signingKey
}

// signingScope is what a signing key is derived for, besides the secret.
type signingScope struct{ accessKeyID, date, region, service string }

type signingKey struct {
	secret string
	key    []byte
	// macs holds HMAC-SHA256 states keyed with key: Reset returns one to
	// its keyed state, where hmac.New would allocate and hash the key's
	// pads again for every request.
	macs sync.Pool
}

func newSigningKey(secret string, key []byte) *signingKey {
	k := &signingKey{secret: secret, key: key}
	k.macs.New = func() any { return hmac.New(sha256.New, key) }
	return k
}

// mac returns the HMAC of data under the key, in hex.
func (k *signingKey) mac(data []byte) [2 * sha256.Size]byte {
	m := k.macs.Get().(hash.Hash)
	m.Reset()
	m.Write(data)
	var sum [sha256.Size]byte
	var out [2 * sha256.Size]byte
	hex.Encode(out[:], m.Sum(sum[:0]))
	k.macs.Put(m)
	return out
}

const maxCachedSigningKeys = 1024

func (c *signingKeyCache) get(secret string, a sigV4Auth) *signingKey {
	id := signingScope{a.accessKeyID, a.date, a.region, a.service}
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if ok && e.secret == secret {
		return e
	}
	k := hmacSHA256([]byte("AWS4"+secret), a.date)
	k = hmacSHA256(k, a.region)
	k = hmacSHA256(k, a.service)
	k = hmacSHA256(k, sigV4Terminator)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedSigningKeys {
		c.m = map[signingScope]*signingKey{}
	}
	e = newSigningKey(secret, k)
	c.m[id] = e
	c.mu.Unlock()
	return e
}

// preAuth is a request whose Authorization header, signing time,
// credential scope and access key have been checked, before its body is
// read: what can be refused without reading the body is refused first.
type preAuth struct {
	a                  sigV4Auth
	amzDate            string
	secret, principal  string
	claimedPayloadHash string
}

// verify authenticates r, whose body has been read into body, and returns
// the principal of its access key.
func (v *verifier) verify(r *http.Request, body []byte) (string, *authError) {
	p, aerr := v.verifyHeaders(r)
	if aerr != nil {
		return "", aerr
	}
	return v.verifyBody(p, r, body)
}

// verifyHeaders checks everything about r that does not need its body:
// the Authorization header, the headers it must sign, the signing time
// and scope, and that the access key is known.
func (v *verifier) verifyHeaders(r *http.Request) (*preAuth, *authError) {
	hs := r.Header.Values("Authorization")
	switch {
	case len(hs) == 0 && r.URL.Query().Get("X-Amz-Algorithm") != "":
		return nil, incomplete("query-string (presigned) authentication is not supported; sign the Authorization header")
	case len(hs) == 0:
		return nil, &authError{excMissingAuthToken, msgMissingAuthorization}
	case len(hs) > 1:
		return nil, incomplete("request has more than one Authorization header")
	}
	a, aerr := parseAuthorization(hs[0])
	if aerr != nil {
		return nil, aerr
	}
	t, amzDate, aerr := requestTime(r)
	if aerr != nil {
		return nil, aerr
	}
	// The signing time must be signed, or a captured request could be
	// replayed with a fresh date; so must the headers that select what
	// the request does (X-Amz-Target), or a signed request could be
	// replayed as another operation.
	dateHeader, dateName := "x-amz-date", "X-Amz-Date"
	if r.Header.Get("X-Amz-Date") == "" {
		dateHeader, dateName = "date", "Date"
	}
	if !containsString(a.signedHeaders, dateHeader) {
		return nil, incomplete("'%s' must be a 'SignedHeader' in the AWS Authorization.", dateName)
	}
	for _, h := range v.requireSigned {
		if !containsString(a.signedHeaders, h) {
			return nil, incomplete("'%s' must be a 'SignedHeader' in the AWS Authorization.", http.CanonicalHeaderKey(h))
		}
	}
	if d := t.Format(scopeDateFormat); a.date != d {
		return nil, invalidSig("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s'", a.date, d)
	}
	if a.service != v.service {
		return nil, invalidSig("Credential should be scoped to correct service: '%s'.", v.service)
	}
	if a.region != v.region {
		return nil, invalidSig("Credential should be scoped to a valid region, not '%s'.", netlimit.Truncate(a.region, 32))
	}
	if v.hosts != nil && !v.hosts[hostName(r.Host)] {
		return nil, invalidSig("The request is signed for host '%s', which is not a name of this endpoint.", netlimit.Truncate(r.Host, 64))
	}
	if r.Header.Get("X-Amz-Security-Token") != "" {
		return nil, &authError{excUnrecognizedClient, "session tokens are not supported; sign with an access key of this service"}
	}
	secret, principal, ok := v.creds.Lookup(a.accessKeyID)
	if !ok {
		return nil, &authError{excUnrecognizedClient, msgUnrecognizedClient}
	}
	if xc, isXC := v.creds.(xksCredentials); v.refuseXKS && isXC && xc.IsXKS(a.accessKeyID) {
		return nil, &authError{excUnrecognizedClient, "The access key is an external key store proxy credential; it signs only XKS proxy requests."}
	}
	now := v.now().UTC()
	if t.Before(now.Add(-v.maxSkew)) {
		return nil, invalidSig("Signature expired: %s is now earlier than %s (%s - %s.)", t.Format(amzDateFormat),
			now.Add(-v.maxSkew).Format(amzDateFormat), now.Format(amzDateFormat), v.maxSkew)
	}
	if t.After(now.Add(v.maxSkew)) {
		return nil, invalidSig("Signature not yet current: %s is still later than %s (%s + %s.)", t.Format(amzDateFormat),
			now.Add(v.maxSkew).Format(amzDateFormat), now.Format(amzDateFormat), v.maxSkew)
	}
	claimed := r.Header.Get("X-Amz-Content-Sha256")
	if claimed != "" && (len(claimed) != 2*sha256.Size || !isLowerHex(claimed)) {
		// UNSIGNED-PAYLOAD lands here too: every request body is signed.
		return nil, invalidSig("The provided 'x-amz-content-sha256' header does not match what was computed.")
	}
	return &preAuth{a: a, amzDate: amzDate, secret: secret, principal: principal, claimedPayloadHash: claimed}, nil
}

// verifyBody finishes what verifyHeaders began, once the body is read:
// the payload hash and the signature.
func (v *verifier) verifyBody(p *preAuth, r *http.Request, body []byte) (string, *authError) {
	sum := sha256.Sum256(body)
	var payloadHash [2 * sha256.Size]byte
	hex.Encode(payloadHash[:], sum[:])
	if p.claimedPayloadHash != "" && p.claimedPayloadHash != string(payloadHash[:]) {
		return "", invalidSig("The provided 'x-amz-content-sha256' header does not match what was computed.")
	}
	creq, aerr := canonicalRequest(r, p.a, payloadHash[:])
	if aerr != nil {
		return "", aerr
	}
	want := signature(v.keys.get(p.secret, p.a), p.a, p.amzDate, creq)
	if subtle.ConstantTimeCompare(want[:], []byte(p.a.signature)) != 1 {
		return "", invalidSig(msgSignatureMismatch)
	}
	return p.principal, nil
}

// requestTime is the signing time: X-Amz-Date, or else the Date header. It
// also returns the time as the string to sign carries it.
func requestTime(r *http.Request) (time.Time, string, *authError) {
	if s := r.Header.Get("X-Amz-Date"); s != "" {
		t, err := time.Parse(amzDateFormat, s)
		if err != nil {
			return time.Time{}, "", incomplete("X-Amz-Date must have the form YYYYMMDD'T'HHMMSS'Z'")
		}
		return t, s, nil
	}
	if s := r.Header.Get("Date"); s != "" {
		t, err := http.ParseTime(s)
		if err != nil {
			return time.Time{}, "", incomplete("Date header is not an HTTP date")
		}
		t = t.UTC()
		return t, t.Format(amzDateFormat), nil
	}
	return time.Time{}, "", incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.")
}

// canonicalRequest builds the canonical request of SigV4 task 1.
func canonicalRequest(r *http.Request, a sigV4Auth, payloadHash []byte) ([]byte, *authError) {
	var query url.Values
	if r.URL.RawQuery != "" {
		var err error
		if query, err = url.ParseQuery(r.URL.RawQuery); err != nil {
			return nil, invalidSig("the query string is not valid URL encoding")
		}
	}
	var b bytes.Buffer
	b.Grow(canonicalRequestSize)
	b.WriteString(r.Method)
	b.WriteByte('\n')
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	// Services other than S3 encode each path segment a second time, as
	// the SDKs do when signing.
	b.WriteString(uriEncode(path, false))
	b.WriteByte('\n')
	names := make([]string, 0, len(query))
	for k := range query {
		names = append(names, k)
	}
	sort.Strings(names)
	first := true
	for _, k := range names {
		vs := append([]string(nil), query[k]...)
		sort.Strings(vs)
		for _, val := range vs {
			if !first {
				b.WriteByte('&')
			}
			first = false
			b.WriteString(uriEncode(k, true))
			b.WriteByte('=')
			b.WriteString(uriEncode(val, true))
		}
	}
	b.WriteByte('\n')
	for _, name := range a.signedHeaders {
		b.WriteString(name)
		b.WriteByte(':')
		if name == "host" {
			// net/http keeps the Host header out of r.Header.
			b.WriteString(collapseSpaces(r.Host))
			b.WriteByte('\n')
			continue
		}
		values := headerValues(r.Header, name)
		if name == "content-length" && len(values) == 0 && r.ContentLength >= 0 {
			b.WriteString(strconv.FormatInt(r.ContentLength, 10))
		}
		for i, val := range values {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(collapseSpaces(val))
		}
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(a.signedRaw)
	b.WriteByte('\n')
	b.Write(payloadHash)
	return b.Bytes(), nil
}

// canonicalRequestSize is room for an SDK's KMS request's canonical form
// (about 400 bytes), so that building one allocates once.
const canonicalRequestSize = 512

// canonicalHeaderNames are the canonical forms of the headers SDKs sign,
// by their lower-case names: Header.Values would canonicalize each name
// again, allocating, on every request.
var canonicalHeaderNames = map[string]string{}

func init() {
	for _, h := range []string{"Content-Length", "Content-Type", "Date", "X-Amz-Content-Sha256", "X-Amz-Date",
		"X-Amz-Security-Token", "X-Amz-Target", "X-Amz-User-Agent", "Amz-Sdk-Invocation-Id", "Amz-Sdk-Request",
		"User-Agent", "Accept", "Accept-Encoding", "Content-Encoding", "Expect"} {
		canonicalHeaderNames[strings.ToLower(h)] = h
	}
}

// headerValues is h.Values(name) for a lower-case name.
func headerValues(h http.Header, name string) []string {
	if c, ok := canonicalHeaderNames[name]; ok {
		return h[c]
	}
	return h.Values(name)
}

// signature computes SigV4 tasks 2 and 3: the string to sign and its HMAC
// under the signing key derived from the secret and scope, in hex.
func signature(signingKey *signingKey, a sigV4Auth, amzDate string, canonical []byte) [2 * sha256.Size]byte {
	h := sha256.Sum256(canonical)
	var hh [2 * sha256.Size]byte
	hex.Encode(hh[:], h[:])
	toSign := make([]byte, 0, len(sigV4Algorithm)+len(amzDate)+len(a.date)+len(a.region)+len(a.service)+len(sigV4Terminator)+len(hh)+6)
	for _, s := range [...]string{sigV4Algorithm, "\n", amzDate, "\n", a.date, "/", a.region, "/", a.service, "/", sigV4Terminator, "\n"} {
		toSign = append(toSign, s...)
	}
	return signingKey.mac(append(toSign, hh[:]...))
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// uriEncode percent-encodes every byte but the RFC 3986 unreserved
// characters, and '/' unless encodeSlash, with upper-case hex digits.
func uriEncode(s string, encodeSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	if !needsURIEncoding(s, encodeSlash) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		case c == '/' && !encodeSlash:
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		}
	}
	return b.String()
}

func needsURIEncoding(s string, encodeSlash bool) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
		case c == '/' && !encodeSlash:
		default:
			return true
		}
	}
	return false
}

// collapseSpaces trims a header value and collapses runs of spaces inside
// it to one, as canonical headers require.
func collapseSpaces(s string) string {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "  ") {
		return s
	}
	var b strings.Builder
	space := false
	for i := 0; i < len(s); i++ {
		if s[i] == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHeaderToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
