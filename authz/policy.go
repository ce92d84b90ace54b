package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/hsmbroker/hsmbroker/internal/strictjson"
)

// Key policies are AWS-style JSON documents:
//
//	{"Version": "2012-10-17", "Statement": [{
//	  "Sid": "AppDecrypts", "Effect": "Allow",
//	  "Principal": {"AWS": ["app", "arn:aws:iam::000000000000:user/batch"]},
//	  "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*",
//	  "Condition": {"StringEquals": {"kms:EncryptionContext:tenant": "acme"}}}]}
//
// Principals: "*" (everyone), a principal's name, its user ARN
// (arn:aws:iam::ACCOUNT:user/NAME), a role (arn:aws:iam::ACCOUNT:role/ROLE,
// ROLE being admin, user or auditor), or the account
// (arn:aws:iam::ACCOUNT:root, or ACCOUNT), which means every admin, as
// the account's IAM administrators are in AWS. Actions: kms:NAME, and
// kmip:NAME for the KMIP operations a key policy decides, with * and ?
// wildcards, case-insensitive. Resources: "*" (the key the policy
// is on) or key ARNs, with * and ? wildcards; a statement applies to the
// key only if one of them matches its ARN, and a statement without a
// Resource applies to it. Conditions: StringEquals,
// StringNotEquals, StringLike and StringNotLike on
// kms:EncryptionContext:KEY. Anything else (NotPrincipal, NotAction,
// other condition keys) is refused when the policy is put, rather than
// ignored when it is evaluated: a statement silently ignored could be a
// Deny that protects something.

// Effect is what a policy says about a request.
type Effect uint8

const (
	// EffectNone: no statement applies; a grant may still allow.
	EffectNone Effect = iota
	// EffectAllow: an Allow statement applies and no Deny does.
	EffectAllow
	// EffectDeny: a Deny statement applies; nothing else counts.
	EffectDeny
)

// Policy is a parsed key policy document. It is immutable.
type Policy struct {
	statements []policyStatement
	// namesKeys: a statement's Resource names key ARNs, so deciding needs
	// the key's ARN (otherwise every statement applies to any key).
	namesKeys bool
}

type policyStatement struct {
	deny       bool
	principals []policyPrincipal
	actions    []string // lower case, may hold wildcards
	resources  []string // "*" or key ARN patterns; empty: the key itself
	conditions []policyCondition
}

// policyPrincipal matches callers: any, a principal name, a role, or the
// account (admins) of a given id.
type policyPrincipal struct {
	any     bool
	name    string
	role    Role
	account string // set for the account form
}

type policyCondition struct {
	op     string // StringEquals, StringNotEquals, StringLike, StringNotLike
	key    string // the encryption context key
	values []string
}

// stringList is a JSON string or array of strings.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = stringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("must be a string or a list of strings")
	}
	*l = many
	return nil
}

type rawPolicy struct {
	Version   string          `json:"Version"`
	ID        string          `json:"Id"`
	Statement json.RawMessage `json:"Statement"`
}

type rawStatement struct {
	Sid          string                           `json:"Sid"`
	Effect       string                           `json:"Effect"`
	Principal    json.RawMessage                  `json:"Principal"`
	NotPrincipal json.RawMessage                  `json:"NotPrincipal"`
	Action       stringList                       `json:"Action"`
	NotAction    json.RawMessage                  `json:"NotAction"`
	Resource     stringList                       `json:"Resource"`
	NotResource  json.RawMessage                  `json:"NotResource"`
	Condition    map[string]map[string]stringList `json:"Condition"`
}

var (
	accountPattern = regexp.MustCompile(`^[0-9]{12}$`)
	// kmsActions are the AWS KMS actions, lower case, so that a misspelt
	// action is refused instead of never matching.
	kmsActions = func() map[string]bool {
		m := map[string]bool{}
		for a := range rules {
			if n, ok := strings.CutPrefix(a, "kms:"); ok {
				m[strings.ToLower(n)] = true
			}
		}
		for _, n := range []string{"ReEncryptFrom", "ReEncryptTo", "ListRetirableGrants", "ConnectCustomKeyStore",
			"CreateCustomKeyStore", "DeleteCustomKeyStore", "DescribeCustomKeyStores", "DisconnectCustomKeyStore",
			"UpdateCustomKeyStore", "GetParametersForImport", "ImportKeyMaterial", "DeleteImportedKeyMaterial",
			"ReplicateKey", "UpdatePrimaryRegion", "SynchronizeMultiRegionKey", "DeriveSharedSecret",
			"UpdateKeyDescription", "GetKeyLastUsage"} {
			m[strings.ToLower(n)] = true
		}
		return m
	}()
	// kmipActions are the KMIP front's actions as the rules that
	// authorize them name them, lower case and without "kmip:": true for
	// those a key policy decides (the operations that reach an object),
	// false for those answered by role alone (Query, Discover Versions),
	// which a policy statement could only name to no effect.
	kmipActions = func() map[string]bool {
		m := map[string]bool{}
		for a, r := range rules {
			if n, ok := strings.CutPrefix(a, "kmip:"); ok {
				m[strings.ToLower(n)] = slices.Contains(slices.Collect(maps.Values(r)), ByPolicy)
			}
		}
		return m
	}()
)

// ParsePolicy parses and checks a policy document.
func ParsePolicy(doc string) (*Policy, error) {
	var raw rawPolicy
	// The document is returned verbatim (GetKeyPolicy) and evaluated as
	// encoding/json reads it: one with repeated or case-variant members
	// ("Effect":"Deny","effect":"Allow") would read one way to a reviewer
	// and another to the evaluator, so it is refused.
	if err := strictjson.Check([]byte(doc), &raw); err != nil {
		return nil, fmt.Errorf("the key policy cannot be read one way: %w", err)
	}
	// A member the evaluator does not read is refused, as in a statement:
	// a misspelt "Statements" could hold a Deny that would never apply.
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return nil, decodeError(err, "key policy", "Version, Id and Statement", "the key policy is not a JSON object")
	}
	if raw.Version != "" && raw.Version != "2012-10-17" && raw.Version != "2008-10-17" {
		return nil, fmt.Errorf("the Version must be 2012-10-17 (or 2008-10-17), not %.64q", raw.Version)
	}
	body := bytes.TrimSpace(raw.Statement)
	var stmts []json.RawMessage
	switch {
	case len(body) == 0:
		return nil, errors.New("the key policy has no Statement")
	case body[0] == '{':
		stmts = []json.RawMessage{body}
	default:
		if err := json.Unmarshal(body, &stmts); err != nil {
			return nil, errors.New("the Statement must be an object or a list of objects")
		}
	}
	p := &Policy{}
	for i, b := range stmts {
		st, err := parseStatement(b)
		if err != nil {
			return nil, fmt.Errorf("statement %d: %w", i+1, err)
		}
		p.statements = append(p.statements, st)
		p.namesKeys = p.namesKeys || slices.ContainsFunc(st.resources, func(r string) bool { return r != "*" })
	}
	return p, nil
}

func parseStatement(b []byte) (policyStatement, error) {
	var st policyStatement
	var raw rawStatement
	if err := strictjson.Check(b, &raw); err != nil {
		return st, fmt.Errorf("cannot be read one way: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return st, decodeError(err, "statement", "Sid, Effect, Principal, Action, Resource and Condition",
			"not a statement this service can evaluate: not a JSON object of statement members")
	}
	switch {
	case raw.NotPrincipal != nil, raw.NotAction != nil, raw.NotResource != nil:
		return st, errors.New("the NotPrincipal, NotAction and NotResource members are not supported; name what the statement applies to")
	case raw.Effect == "Deny":
		st.deny = true
	case raw.Effect != "Allow":
		return st, fmt.Errorf("the Effect must be Allow or Deny, not %q", raw.Effect)
	}
	var err error
	if st.principals, err = parsePrincipals(raw.Principal); err != nil {
		return st, err
	}
	if len(raw.Action) == 0 {
		return st, errors.New("the Action member is required")
	}
	for _, a := range raw.Action {
		if err := checkAction(a); err != nil {
			return st, err
		}
		st.actions = append(st.actions, strings.ToLower(a))
	}
	if raw.Resource != nil && len(raw.Resource) == 0 {
		return st, errors.New("the Resource member names nothing; give \"*\" (this key) or the key's ARN")
	}
	for _, r := range raw.Resource {
		if err := checkResource(r); err != nil {
			return st, err
		}
		st.resources = append(st.resources, r)
	}
	for op, conds := range raw.Condition {
		switch op {
		case "StringEquals", "StringNotEquals", "StringLike", "StringNotLike":
		default:
			return st, fmt.Errorf("condition operator %q is not supported (StringEquals, StringNotEquals, StringLike, StringNotLike are)", op)
		}
		for k, vs := range conds {
			ecKey, ok := strings.CutPrefix(k, "kms:EncryptionContext:")
			if !ok || ecKey == "" {
				return st, fmt.Errorf("condition key %q is not supported (kms:EncryptionContext:KEY is)", k)
			}
			if len(vs) == 0 {
				return st, fmt.Errorf("condition %s on %q has no values", op, k)
			}
			st.conditions = append(st.conditions, policyCondition{op: op, key: ecKey, values: vs})
		}
	}
	return st, nil
}

// checkAction checks one entry of a statement's Action: "*", a kms:
// action of AWS KMS, or a kmip: action a key policy decides, each with *
// and ? wildcards, so that a misspelt action is refused instead of never
// matching.
func checkAction(a string) error {
	la := strings.ToLower(a)
	if la == "*" {
		return nil
	}
	if name, ok := strings.CutPrefix(la, "kms:"); ok && name != "" {
		if !strings.ContainsAny(name, "*?") && !kmsActions[name] {
			return fmt.Errorf("action %q is not an AWS KMS action", a)
		}
		return nil
	}
	if name, ok := strings.CutPrefix(la, "kmip:"); ok && name != "" {
		byPolicy, known := kmipActions[name]
		switch {
		case strings.ContainsAny(name, "*?") || byPolicy:
			return nil
		case known:
			return fmt.Errorf("action %q is answered by role alone; no key policy decides it", a)
		}
		return fmt.Errorf("action %q is not a KMIP operation a key policy decides; those are kmip:%s", a, strings.Join(kmipObjectActions, ", kmip:"))
	}
	return fmt.Errorf("action %q is not a kms: or kmip: action", a)
}

// checkResource checks one entry of a statement's Resource: "*", which in a
// key policy means the key the policy is on, or a KMS key ARN
// (arn:PARTITION:kms:REGION:ACCOUNT:key/KEY_ID), where * and ? are
// wildcards. Anything else (an alias ARN, another service's ARN, a bare
// key id) is refused, because a statement that names no key could be
// read as applying to this one or to none.
func checkResource(r string) error {
	if r == "*" {
		return nil
	}
	parts := strings.SplitN(r, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || !glob(parts[2], "kms") ||
		!(strings.HasPrefix(parts[5], "key/") || parts[5] == "*") {
		return fmt.Errorf("resource %q is not \"*\" (this key) or a key ARN of the form arn:aws:kms:REGION:ACCOUNT:key/KEY_ID", r)
	}
	return nil
}

func parsePrincipals(raw json.RawMessage) ([]policyPrincipal, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, errors.New("the Principal member is required")
	}
	var star string
	if err := json.Unmarshal(raw, &star); err == nil {
		if star != "*" {
			return nil, errors.New(`the Principal must be "*" or {"AWS": ...}`)
		}
		return []policyPrincipal{{any: true}}, nil
	}
	var m map[string]stringList
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, errors.New(`the Principal must be "*" or {"AWS": ...}`)
	}
	var ps []policyPrincipal
	for kind, vs := range m {
		if kind != "AWS" {
			return nil, fmt.Errorf("principal kind %q is not supported (AWS is)", kind)
		}
		for _, v := range vs {
			p, err := parsePrincipal(v)
			if err != nil {
				return nil, err
			}
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return nil, errors.New("the Principal names no one")
	}
	return ps, nil
}

func parsePrincipal(v string) (policyPrincipal, error) {
	switch {
	case v == "*":
		return policyPrincipal{any: true}, nil
	case v == "":
		return policyPrincipal{}, errors.New("empty principal")
	case accountPattern.MatchString(v):
		return policyPrincipal{account: v}, nil
	case !strings.HasPrefix(v, "arn:"):
		return policyPrincipal{name: v}, nil
	}
	parts := strings.SplitN(v, ":", 6)
	if len(parts) != 6 || parts[1] != "aws" || parts[2] != "iam" || !accountPattern.MatchString(parts[4]) {
		return policyPrincipal{}, fmt.Errorf("principal %q is not an IAM ARN of this form: arn:aws:iam::ACCOUNT:root|user/NAME|role/ROLE", v)
	}
	acct, res := parts[4], parts[5]
	switch {
	case res == "root":
		return policyPrincipal{account: acct}, nil
	case strings.HasPrefix(res, "user/") && len(res) > len("user/"):
		return policyPrincipal{name: res[len("user/"):], account: acct}, nil
	case strings.HasPrefix(res, "role/"):
		role := Role(res[len("role/"):])
		if role.Issuable() {
			return policyPrincipal{role: role, account: acct}, nil
		}
		return policyPrincipal{}, fmt.Errorf("principal %q names role %q; the roles are admin, user and auditor", v, role)
	}
	return policyPrincipal{}, fmt.Errorf("principal %q is not an IAM ARN of this form: arn:aws:iam::ACCOUNT:root|user/NAME|role/ROLE", v)
}

// matches reports whether p names the caller id, in this service's account.
func (p policyPrincipal) matches(account string, id Caller) bool {
	if p.any {
		return true
	}
	if p.account != "" && p.account != account {
		return false
	}
	switch {
	case p.name != "":
		return p.name == id.Principal
	case p.role != "":
		return p.role == id.Role
	}
	return id.Role == RoleAdmin // the account: its administrators
}

// Decide evaluates the policy, put on the key whose ARN is keyARN, for
// caller id asking for action under encryption context ec, in the given
// account: a matching Deny wins, else a matching Allow allows, else the
// policy has nothing to say (EffectNone).
func (p *Policy) Decide(account, keyARN string, id Caller, action string, ec map[string]string) Effect {
	action = strings.ToLower(action)
	allowed := false
	for _, st := range p.statements {
		if !st.applies(account, keyARN, id, action, ec) {
			continue
		}
		if st.deny {
			return EffectDeny
		}
		allowed = true
	}
	if allowed {
		return EffectAllow
	}
	return EffectNone
}

func (st policyStatement) applies(account, keyARN string, id Caller, action string, ec map[string]string) bool {
	if !st.names(keyARN) {
		return false
	}
	who := false
	for _, p := range st.principals {
		if p.matches(account, id) {
			who = true
			break
		}
	}
	if !who {
		return false
	}
	what := false
	for _, a := range st.actions {
		if a == "*" || glob(a, action) {
			what = true
			break
		}
	}
	if !what {
		return false
	}
	for _, c := range st.conditions {
		if !c.holds(ec) {
			return false
		}
	}
	return true
}

// names reports whether the statement's Resource takes in the key whose
// ARN is keyARN.
func (st policyStatement) names(keyARN string) bool {
	if len(st.resources) == 0 {
		return true
	}
	for _, r := range st.resources {
		if r == "*" || glob(r, keyARN) {
			return true
		}
	}
	return false
}

func (c policyCondition) holds(ec map[string]string) bool {
	v, present := ec[c.key]
	match := false
	if present {
		for _, want := range c.values {
			if (c.op == "StringEquals" || c.op == "StringNotEquals") && v == want ||
				(c.op == "StringLike" || c.op == "StringNotLike") && glob(want, v) {
				match = true
				break
			}
		}
	}
	if c.op == "StringNotEquals" || c.op == "StringNotLike" {
		return !match
	}
	return match
}

// glob matches s against pattern, where * is any run of characters and ?
// any one character (IAM's wildcards; nothing else is special).
func glob(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// decodeError says in a policy's own terms why a part of it (what: "key
// policy" or "statement", whose members are listed in members) does not
// decode, where encoding/json speaks of Go ("json: unknown field",
// "cannot unmarshal number into Go struct field rawStatement.Effect");
// notObject is the error for anything else.
func decodeError(err error, what, members, notObject string) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("the member %s has the wrong type (%s)", te.Field, te.Value)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf("%.80s is not a %s member; a %s has %s", name, what, what, members)
	}
	return errors.New(notObject)
}
