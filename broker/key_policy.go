package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
)

// ExcMalformedPolicyDocument is AWS's exception for a key policy that is
// not a policy document.
const ExcMalformedPolicyDocument = "MalformedPolicyDocumentException"

// MaxKeyPolicy is the largest key policy, in bytes, as in AWS KMS.
const MaxKeyPolicy = 32 << 10

// DefaultKeyPolicy is AWS KMS's default key policy, which gives the
// account full access to the key; here the account stands for every
// principal with the admin role. A key whose creator is known has that
// principal added (defaultPolicyFor): its policy until one is put.
func (s *Service) DefaultKeyPolicy() string {
	return fmt.Sprintf(defaultPolicyFormat, s.cfg.Account, "")
}

// defaultPolicyFormat is AWS KMS's default key policy, formatted with the
// account id and further statements (each starting ", {").
const defaultPolicyFormat = `{
  "Version" : "2012-10-17",
  "Id" : "key-default-1",
  "Statement" : [ {
    "Sid" : "Enable IAM User Permissions",
    "Effect" : "Allow",
    "Principal" : {
      "AWS" : "arn:aws:iam::%s:root"
    },
    "Action" : "kms:*",
    "Resource" : "*"
  }%s ]
}`

// CheckKeyPolicy checks that policy has the form of a key policy document.
func CheckKeyPolicy(policy string) error {
	malformed := func(format string, args ...any) error {
		return newError(codes.InvalidArgument, ExcMalformedPolicyDocument, format, args...)
	}
	switch {
	case policy == "":
		return newError(codes.InvalidArgument, ExcValidation, "invalid Policy: is required")
	case len(policy) > MaxKeyPolicy:
		return malformed("the key policy is %d bytes; the limit is %d", len(policy), MaxKeyPolicy)
	case !utf8.ValidString(policy):
		return malformed("the key policy is not valid UTF-8")
	}
	var doc map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(policy))
	if err := dec.Decode(&doc); err != nil || doc == nil {
		return malformed("the key policy is not a JSON object")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return malformed("the key policy has data after its JSON object")
	}
	st := bytes.TrimSpace(doc["Statement"])
	if len(st) == 0 || (st[0] != '[' && st[0] != '{') {
		return malformed("the key policy has no Statement")
	}
	if _, err := parsePolicy(policy); err != nil {
		return malformed("%v", err)
	}
	return nil
}
