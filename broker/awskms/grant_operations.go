package awskms

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/internal/netlimit"
)

// Grants map onto the core's: a grant gives one principal (by name, or as
// arn:aws:iam::ACCOUNT:user/NAME) some operations on one key. Grant
// tokens are the grant ids; they carry no authority of their own, and
// where AWS accepts GrantTokens to use a grant before it has propagated,
// this service ignores them: a grant is in force on a node once the node
// has applied it, within the replication delay.

type grantConstraints struct {
	EncryptionContextSubset map[string]string `json:",omitempty"`
	EncryptionContextEquals map[string]string `json:",omitempty"`
}

type createGrantInput struct {
	KeyId             string
	GranteePrincipal  string
	RetiringPrincipal string
	Operations        []string
	Constraints       *grantConstraints
	Name              string
	grantTokens
	dryRun
}

type createGrantOutput struct {
	GrantToken string
	GrantId    string
}

type listGrantsInput struct {
	KeyId            string
	Limit            *int32
	Marker           string
	GrantId          string
	GranteePrincipal string
}

type grantListEntry struct {
	KeyId             string
	GrantId           string
	Name              string `json:",omitempty"`
	CreationDate      epochTime
	GranteePrincipal  string
	RetiringPrincipal string `json:",omitempty"`
	IssuingAccount    string
	Operations        []string
	Constraints       *grantConstraints `json:",omitempty"`
}

type listGrantsOutput struct {
	Grants     []grantListEntry
	NextMarker string `json:",omitempty"`
	Truncated  bool
}

type revokeGrantInput struct {
	KeyId   string
	GrantId string
	dryRun
}

type retireGrantInput struct {
	GrantToken string
	KeyId      string
	GrantId    string
	dryRun
}

func (h *Handler) createGrant(ctx context.Context, in *createGrantInput) (*createGrantOutput, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	if in.GranteePrincipal == "" {
		return nil, required("GranteePrincipal")
	}
	if len(in.Operations) == 0 {
		return nil, required("Operations")
	}
	gi := broker.CreateGrantRequest{KeyRef: ref, Grantee: in.GranteePrincipal, RetiringPrincipal: in.RetiringPrincipal,
		Operations: in.Operations, Name: in.Name, DryRun: in.isDryRun()}
	if c := in.Constraints; c != nil {
		gi.ContextEquals, gi.ContextSubset = c.EncryptionContextEquals, c.EncryptionContextSubset
	}
	g, err := h.svc.CreateGrant(ctx, gi)
	if err != nil {
		return nil, err
	}
	return &createGrantOutput{GrantToken: g.ID, GrantId: g.ID}, nil
}

func (h *Handler) listGrants(ctx context.Context, in *listGrantsInput) (*listGrantsOutput, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	n, err := limit(in.Limit, 50, 100)
	if err != nil {
		return nil, err
	}
	after := ""
	if in.Marker != "" {
		b, err := base64.RawURLEncoding.DecodeString(in.Marker)
		if err != nil || len(b) < 2 || b[0] != 'g' {
			return nil, &apiError{http.StatusBadRequest, broker.ExcInvalidMarker, "Marker is not a marker this service issued"}
		}
		after = string(b[1:])
	}
	page, err := h.svc.ListGrants(ctx, broker.ListGrantsRequest{KeyRef: ref, GrantID: in.GrantId, Grantee: in.GranteePrincipal,
		After: after, PageSize: n})
	if err != nil {
		return nil, err
	}
	out := &listGrantsOutput{Grants: []grantListEntry{}}
	for _, g := range page.Grants {
		out.Grants = append(out.Grants, h.grantEntry(g))
	}
	if page.Next != "" {
		out.NextMarker, out.Truncated = base64.RawURLEncoding.EncodeToString([]byte("g"+page.Next)), true
	}
	return out, nil
}

func (h *Handler) grantEntry(g cluster.Grant) grantListEntry {
	e := grantListEntry{KeyId: h.arn(g.KeyID), GrantId: g.ID, Name: g.Name, CreationDate: epochTime(g.CreatedAt.Truncate(time.Second)),
		GranteePrincipal: g.Grantee, RetiringPrincipal: g.RetiringPrincipal,
		IssuingAccount: "arn:aws:iam::" + h.account + ":root", Operations: g.Operations}
	if len(g.ContextEquals) > 0 || len(g.ContextSubset) > 0 {
		e.Constraints = &grantConstraints{EncryptionContextEquals: g.ContextEquals, EncryptionContextSubset: g.ContextSubset}
	}
	return e
}

func (h *Handler) revokeGrant(ctx context.Context, in *revokeGrantInput) (*empty, error) {
	ref, err := h.keyRef("KeyId", in.KeyId, false)
	if err != nil {
		return nil, err
	}
	if in.GrantId == "" {
		return nil, required("GrantId")
	}
	return &empty{}, h.svc.RevokeGrant(ctx, broker.RevokeGrantRequest{KeyRef: ref, GrantID: in.GrantId, DryRun: in.isDryRun()})
}

func (h *Handler) retireGrant(ctx context.Context, in *retireGrantInput) (*empty, error) {
	id := in.GrantId
	switch {
	case in.GrantToken != "" && id != "" && in.GrantToken != id:
		return nil, validation("GrantToken and GrantId name different grants")
	case id == "":
		id = in.GrantToken
	}
	if id == "" {
		return nil, validation("RetireGrant needs a GrantToken, or a KeyId and a GrantId")
	}
	ref := ""
	if in.KeyId != "" {
		var err error
		if ref, err = h.keyRef("KeyId", in.KeyId, false); err != nil {
			return nil, err
		}
	}
	if strings.ContainsAny(id, " /") {
		return nil, notFound("grant %s does not exist", netlimit.Truncate(id, 128))
	}
	return &empty{}, h.svc.RetireGrant(ctx, broker.RetireGrantRequest{KeyRef: ref, GrantID: id, DryRun: in.isDryRun()})
}
