package awskms_test

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/hsmbroker/hsmbroker/hsmtest"
)

// TestCreateKeyWithPolicyIsOneCommand: CreateKey with a policy, tags and a
// description replicates one log entry, so the key never exists with the
// default policy; a policy the broker cannot evaluate makes no key and
// writes nothing.
func TestCreateKeyWithPolicyIsOneCommand(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"kms:*","Resource":"*"}]}`

	before, generated := e.node.Stats().LastLogIndex, hsmCalls(t, "C_GenerateKey")
	out, err := e.kms.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String(policy), Description: aws.String("one command"),
		Tags: []types.Tag{{TagKey: aws.String("team"), TagValue: aws.String("a")}}})
	if err != nil {
		t.Fatal(err)
	}
	if n := e.node.Stats().LastLogIndex - before; n != 1 {
		t.Fatalf("CreateKey with a policy appended %d log entries, want 1", n)
	}
	if hsmCalls(t, "C_GenerateKey") == generated {
		t.Fatal("CreateKey generated no key in the HSM")
	}
	id := aws.ToString(out.KeyMetadata.KeyId)
	k, ok := e.node.State().Key(id)
	if !ok || string(k.Policy) != policy || k.Tags["team"] != "a" || k.Description != "one command" {
		t.Fatalf("replicated key %+v (found %v)", k, ok)
	}
	gp, err := e.kms.GetKeyPolicy(ctx, &kms.GetKeyPolicyInput{KeyId: aws.String(id)})
	if err != nil || aws.ToString(gp.Policy) != policy {
		t.Fatalf("GetKeyPolicy: %q, %v", aws.ToString(gp.Policy), err)
	}

	keysBefore := len(e.node.State().Keys())
	before, generated = e.node.Stats().LastLogIndex, hsmCalls(t, "C_GenerateKey")
	for _, bad := range []string{"not json", `{"Version":"2012-10-17"}`, ""} {
		_, err = e.kms.CreateKey(ctx, &kms.CreateKeyInput{Policy: aws.String(bad)})
		if bad == "" {
			wantAWSError(t, err, "ValidationException", "Policy")
			continue
		}
		wantAWSError(t, err, "MalformedPolicyDocumentException")
	}
	if n := e.node.Stats().LastLogIndex - before; n != 0 || len(e.node.State().Keys()) != keysBefore {
		t.Fatalf("refused CreateKey calls appended %d entries; keys %d -> %d", n, keysBefore, len(e.node.State().Keys()))
	}
	if n := hsmCalls(t, "C_GenerateKey") - generated; n != 0 {
		t.Fatalf("refused CreateKey calls generated %d keys in the HSM before the policy was checked", n)
	}
}

// hsmCalls is how many times this process has called the PKCS#11
// function fn, from the partition's call metrics.
func hsmCalls(t *testing.T, fn string) uint64 {
	t.Helper()
	return uint64(hsmtest.Gathered(t, "hsmbroker_hsm_call_duration_seconds", map[string]string{"function": fn}))
}
