package kmip

import (
	"strings"
	"testing"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// TestKMIPActionsInPutKeyPolicy: the wrapping key's policy narrows what
// a KMIP client may do with the kmip: actions docs/KMIP.md names: an
// admin puts a read-only policy for users with a Deny on kmip:Destroy,
// and a user may then Get, Locate and Get Attributes but not Register
// or Destroy. An action that is not a KMIP operation a policy decides is
// refused when the policy is put.
func TestKMIPActionsInPutKeyPolicy(t *testing.T) {
	e := newEnv(t)
	v := version{1, 4}
	user := e.dial(t, "app", authz.RoleUser)
	id := ids(user.do(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey),
		ttlv.Struct(tagTemplateAttribute, attr1("Name", nameValue("read-only"))), symKey(randBytes(t, 16))))[0]

	wrapping, err := e.c.Nodes[0].Service.KMIP().EnsureWrappingKey(t.Context(), DefaultWrappingKey)
	if err != nil {
		t.Fatal(err)
	}
	keys := pb.NewKeyServiceClient(e.c.DialAs(0, "root-admin", authz.RoleAdmin))
	put := func(actions string) error {
		policy := `{"Version":"2012-10-17","Statement":[` +
			`{"Sid":"Admins","Effect":"Allow","Principal":{"AWS":"root-admin"},"Action":["kms:*","kmip:*"],"Resource":"*"},` +
			`{"Sid":"Readers","Effect":"Allow","Principal":{"AWS":"app"},"Action":` + actions + `,"Resource":"*"},` +
			`{"Sid":"Keep","Effect":"Deny","Principal":{"AWS":"app"},"Action":"kmip:Destroy","Resource":"*"}]}`
		_, err := keys.PutKeyPolicy(t.Context(), &pb.PutKeyPolicyRequest{KeyId: wrapping, Policy: policy})
		return err
	}
	for _, a := range []string{"kmip:Get", "kmip:Locate", "kmip:GetAttributes", "kmip:Destroy", "kmip:Register", "kmip:Create",
		"kmip:Activate", "kmip:Revoke", "kmip:CreateKeyPair", "kmip:SignatureVerify", "kmip:MAC", "kmip:Encrypt", "kmip:Sign", "kmip:Get*"} {
		if err := put(`["` + a + `"]`); err != nil {
			t.Errorf("a policy naming %s: %v", a, err)
		}
	}
	for a, want := range map[string]string{
		"kmip:ScheduleKeyDeletion": "not a KMIP operation a key policy decides",
		"kmip:Query":               "answered by role alone",
	} {
		if err := put(`["` + a + `"]`); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("a policy naming %s: %v, want an error saying %q", a, err, want)
		}
	}

	if err := put(`["kmip:Get","kmip:Locate","kmip:GetAttributes"]`); err != nil {
		t.Fatalf("the read-only policy of docs/KMIP.md: %v", err)
	}
	user.do(v, opGet, uid(id))
	user.do(v, opLocate, attr1("Name", nameValue("read-only")))
	user.do(v, opGetAttributes, uid(id))
	if r := user.fail(v, opRegister, ttlv.Enum(tagObjectType, objectSymmetricKey), symKey(randBytes(t, 16))); r != reasonPermissionDenied {
		t.Fatalf("Register under the read-only policy: %s", reasonName(r))
	}
	if r := user.fail(v, opDestroy, uid(id)); r != reasonPermissionDenied {
		t.Fatalf("Destroy under a Deny of kmip:Destroy: %s", reasonName(r))
	}
}
