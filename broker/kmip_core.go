package broker

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/hsmbroker/hsmbroker/authz"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	"google.golang.org/grpc/codes"
)

// KMIPObjects is the core of the KMIP front: one typed method per KMIP
// operation, over the Service's authorization, audit, replication and
// HSM. broker/kmip decodes TTLV, calls these methods and encodes their
// results; the rules (which attributes a client may change, lifecycle
// states, usage masks, algorithms) live here.
//
// A KMIP object's material lives only as a ciphertext blob under one
// symmetric KMS key of the cluster (the front's wrapping key, alias/kmip
// by default), made by the HSM: Create draws the material from the HSM's
// generator and seals it there, Register seals the client's material at
// once. Get opens the blob in the HSM and hands the material to the
// authorized caller, as GenerateDataKey hands out a data key, and only for
// objects marked extractable.
//
// Authorization: the role gate (Authorize) admits admins and users to the
// KMIP actions ("kmip:Register"...); then every operation that reaches
// objects checks the wrapping key's policy for its action, so the
// wrapping key's policy says who may do what with KMIP objects.
//
// Every method but Policy and EnsureWrappingKey serves a request begun
// with Service.BeginRequest (front FrontKMIP) and ended with EndRequest.
type KMIPObjects struct {
	s *Service
	// ownerShare is the most KMIP objects one client (owner) may hold, 0
	// for no share (WithOwnerShare).
	ownerShare int
}

// KMIP returns the KMIP core of s, with no share per client.
func (s *Service) KMIP() *KMIPObjects { return &KMIPObjects{s: s} }

// WithOwnerShare returns the core with a share: Register, Create and
// CreateKeyPair refuse what would make one client (the principal that
// would own the objects) own more than n KMIP objects, so that one client
// cannot fill cluster.MaxKMIPObjects alone. The share travels in the
// replicated command and is applied there, so concurrent requests of one
// client cannot pass it; CheckRoom refuses it earlier, before any HSM work.
func (c *KMIPObjects) WithOwnerShare(n int) *KMIPObjects {
	return &KMIPObjects{s: c.s, ownerShare: n}
}

// FrontKMIP names the KMIP front in audit lines.
const FrontKMIP = "kmip"

// kmipContextKey binds a KMIP object's ciphertext blob to the object: the
// blob opens only under the object's own id.
const kmipContextKey = "kmip-object"

// KMIP actions are kmip:<Operation>; their rules are authz's.

// Policy is the policy of the KMIP wrapping key that EnsureWrappingKey
// creates: admins may do everything with the key and with KMIP objects,
// users may use KMIP objects.
func (c *KMIPObjects) Policy() string {
	return fmt.Sprintf(`{"Version":"2012-10-17","Id":"kmip-default","Statement":[`+
		`{"Sid":"Admins","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::%[1]s:root"},"Action":["kms:*","kmip:*"],"Resource":"*"},`+
		`{"Sid":"KMIP clients","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::%[1]s:role/user"},"Action":"kmip:*","Resource":"*"}]}`, c.s.cfg.Account)
}

// EnsureWrappingKey makes the symmetric KMS key that wraps KMIP objects,
// with alias and Policy in one replicated command, unless alias already
// names a key. It is the daemon's own work at start, not a client request.
func (c *KMIPObjects) EnsureWrappingKey(ctx context.Context, alias string) (string, error) {
	s := c.s
	if requestOf(ctx) != nil {
		return "", newError(codes.Internal, ExcInternal, "EnsureWrappingKey is the node's own work, not a request's")
	}
	if err := keys.ValidateAliasName(alias); err != nil {
		return "", err
	}
	if id, ok := s.node.State().ResolveAlias(alias); ok {
		return id, nil
	}
	policy := c.Policy()
	k, err := s.CreateKey(Internal(ctx, "kmip-wrapping-key"), CreateKeyRequest{
		Spec: keys.SpecSymmetricDefault, Usage: keys.UsageEncryptDecrypt,
		Description: "wraps the material of KMIP objects", Alias: alias, Policy: &policy,
	})
	if err != nil {
		// Another node may have made it meanwhile, or before this node
		// caught up: look again once the state is the leader's.
		if serr := s.syncWithLeader(ctx); serr == nil {
			if id, ok := s.node.State().ResolveAlias(alias); ok {
				return id, nil
			}
		}
		return "", fmt.Errorf("make the KMIP wrapping key: %w", err)
	}
	return k.ID, nil
}

// Authorize identifies the caller of a KMIP request begun with
// BeginRequest by its verified client certificate, exactly as gRPC does
// (principal from the certificate, role from the cluster's record or the
// certificate), and applies the role gate for action. objectID is the
// object the request names, for the audit line. It also refuses the
// request while the node is not ready.
func (c *KMIPObjects) Authorize(ctx context.Context, cert *x509.Certificate, action, objectID string) error {
	s := c.s
	rq := requestOf(ctx)
	if rq == nil {
		return newError(codes.Internal, ExcInternal, "request not begun")
	}
	id := authz.Caller{}
	if cert != nil {
		id = s.certIdentity(cert)
	}
	if id.Role == authz.RoleNode || id.Role == authz.RoleOutsideNode {
		id.Role = "" // a node certificate is no KMIP client
	}
	if err := s.roleGate(rq, id, action, RequestContexts{KeyRef: objectID}); err != nil {
		return err
	}
	if KMIPReadsNothing(action) {
		return nil
	}
	return s.refuseIfNotReady()
}

// KMIPReadsNothing reports whether a KMIP action reads nothing of the
// node's state or HSM (Query, Discover Versions): a node that cannot serve
// objects now, or has not started to, still answers it, so that a client
// that asks it as it connects gets its answer.
func KMIPReadsNothing(action string) bool {
	return action == "kmip:Query" || action == "kmip:DiscoverVersions"
}

// KMIPPrincipal returns ctx carrying the principal of a KMIP client
// certificate, for the operations that record an owner.
func KMIPPrincipal(ctx context.Context, cert *x509.Certificate) context.Context {
	if cert == nil {
		return ctx
	}
	return WithPrincipal(ctx, PrincipalFromCert(cert))
}

func kmipInvalid(format string, args ...any) error {
	return newError(codes.InvalidArgument, ExcValidation, format, args...)
}

// object finds an object and checks the caller against its wrapping key's
// policy for the request's action. A follower that does not find it
// catches up with the leader first.
func (c *KMIPObjects) object(ctx context.Context, id string) (cluster.KMIPObject, error) {
	s := c.s
	if id == "" || len(id) > 256 {
		return cluster.KMIPObject{}, kmipInvalid("Unique Identifier must be 1 to 256 bytes")
	}
	st := s.node.State()
	o, ok := st.KMIPObject(id)
	if !ok {
		if err := s.syncWithLeader(ctx); err != nil {
			return o, err
		}
		if o, ok = st.KMIPObject(id); !ok {
			// The id is the client's, unchecked: quoted, so that an
			// escape sequence or a bidirectional override in it reaches
			// neither the client's terminal nor a log as such. It is at
			// most 256 bytes, so the message stays bounded.
			return o, errNotFound("KMIP object %q does not exist", id)
		}
	}
	k, ok := st.Key(o.WrappingKeyID)
	if !ok {
		return o, newError(codes.FailedPrecondition, ExcInvalidState, "the key that wraps KMIP object %s is gone", id)
	}
	if err := s.authorizeKey(ctx, "UniqueIdentifier", k); err != nil {
		return cluster.KMIPObject{}, err
	}
	return o, nil
}

// nameObject records what a request acts on as the key_ref of its audit
// line: the id of the KMIP object it makes, or, for membership calls, the
// node (node:ID) and, for a forwarded write, the command (command:TYPE).
func nameObject(ctx context.Context, id string) {
	if rq := requestOf(ctx); rq != nil {
		rq.mu.Lock()
		rq.contexts.KeyRef = id
		rq.mu.Unlock()
	}
}
