package hsm

import (
	"context"
	"fmt"

	"github.com/miekg/pkcs11"
)

// AuditKeyAttributes reads boolean attributes of the audit key (test only).
func (p *Partition) AuditKeyAttributes(ctx context.Context) (map[string]bool, error) {
	names := map[uint]string{
		pkcs11.CKA_TOKEN: "CKA_TOKEN", pkcs11.CKA_SENSITIVE: "CKA_SENSITIVE", pkcs11.CKA_EXTRACTABLE: "CKA_EXTRACTABLE",
		pkcs11.CKA_NEVER_EXTRACTABLE: "CKA_NEVER_EXTRACTABLE", pkcs11.CKA_SIGN: "CKA_SIGN", pkcs11.CKA_VERIFY: "CKA_VERIFY",
		pkcs11.CKA_ENCRYPT: "CKA_ENCRYPT", pkcs11.CKA_WRAP: "CKA_WRAP", pkcs11.CKA_DERIVE: "CKA_DERIVE",
	}
	out := map[string]bool{}
	err := p.anchorDo(ctx, func(anchor pkcs11.SessionHandle) error {
		h, err := p.auditKeyLocked(anchor)
		if err != nil {
			return err
		}
		for t, name := range names {
			attrs, err := p.m.GetAttributeValue(anchor, h, []*pkcs11.Attribute{pkcs11.NewAttribute(t, nil)})
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			out[name] = len(attrs[0].Value) == 1 && attrs[0].Value[0] == 1
		}
		return nil
	})
	return out, err
}
