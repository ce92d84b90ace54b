package broker

import (
	"context"
	"errors"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	"google.golang.org/grpc/codes"
)

// fieldErr renames the field of a validation error to the request field
// the caller used.
func fieldErr(field string, err error) error {
	var fe *keys.FieldError
	if errors.As(err, &fe) {
		c := *fe
		c.Field = field
		return &c
	}
	return err
}

// resolve finds the key a request names by id, key ARN, alias/NAME or
// alias ARN, in this node's copy of the state. A follower that does not
// find it catches up with the leader and looks once more before it says
// NotFound. An ARN of another region or account names no key here.
func (s *Service) resolve(ctx context.Context, field, ref string) (cluster.Key, error) {
	return s.resolveRef(ctx, field, ref, true)
}

// resolveID is resolve for a field that takes a key id or key ARN only:
// the key of a change (its state, description, tags, policy, rotation or
// grants, or the target of an alias). An alias can be moved, so a change
// made through one could reach another key than the caller looked at
// (proto/hsmbroker/v1/key.proto, "Naming keys"). AWS KMS refuses aliases
// there too.
func (s *Service) resolveID(ctx context.Context, field, ref string) (cluster.Key, error) {
	return s.resolveRef(ctx, field, ref, false)
}

func (s *Service) resolveRef(ctx context.Context, field, ref string, aliasOK bool) (cluster.Key, error) {
	kr, err := keys.ParseKeyRef(ref)
	if err != nil {
		return cluster.Key{}, fieldErr(field, err)
	}
	if why := kr.OtherCluster(field, s.cfg.Region, s.cfg.Account); why != "" {
		return cluster.Key{}, errNotFound("%s", why)
	}
	if kr.IsAlias() && !aliasOK {
		return cluster.Key{}, keys.AliasNotAllowed(field, kr.Alias)
	}
	k, err := s.lookup(kr)
	if err != nil {
		if serr := s.syncWithLeader(ctx); serr != nil {
			return k, serr
		}
		k, err = s.lookup(kr)
	}
	if err == nil {
		if err = s.authorizeKey(ctx, field, k); err != nil {
			return cluster.Key{}, err
		}
	}
	return k, err
}

func (s *Service) lookup(kr keys.KeyRef) (cluster.Key, error) {
	st := s.node.State()
	id := kr.KeyID
	if kr.Alias != "" {
		var ok bool
		if id, ok = st.ResolveAlias(kr.Alias); !ok {
			return cluster.Key{}, errNotFound("alias %s does not exist", kr.Alias)
		}
	}
	k, ok := st.Key(id)
	if !ok {
		return cluster.Key{}, errNotFound("key %s does not exist", id)
	}
	return k, nil
}

// keyByID looks a key up by id (from a ciphertext blob), catching up with
// the leader once on a miss, like resolve.
func (s *Service) keyByID(ctx context.Context, id string) (cluster.Key, bool, error) {
	k, ok := s.node.State().Key(id)
	if !ok {
		if err := s.syncWithLeader(ctx); err != nil {
			return k, false, err
		}
		k, ok = s.node.State().Key(id)
	}
	if ok {
		if err := s.authorizeKey(ctx, "", k); err != nil {
			return cluster.Key{}, false, err
		}
	}
	return k, ok, nil
}

// usable refuses keys that are not enabled, with AWS's distinction between
// disabled and pending deletion.
func usable(k cluster.Key) error {
	switch k.State {
	case keys.StateEnabled:
		return nil
	case keys.StateDisabled:
		return newError(codes.FailedPrecondition, ExcDisabled, "key %s is disabled", k.ID)
	case keys.StatePendingDeletion:
		return newError(codes.FailedPrecondition, ExcInvalidState, "key %s is pending deletion (on %s); cancel the deletion to use it",
			k.ID, k.DeletionDate.Format("2006-01-02T15:04:05Z"))
	}
	return newError(codes.FailedPrecondition, ExcInvalidState, "key %s is in state %s", k.ID, k.State)
}

// resolveUsable resolves a key and checks it is enabled and has usage u.
func (s *Service) resolveUsable(ctx context.Context, field, ref string, u keys.Usage) (cluster.Key, error) {
	k, err := s.resolve(ctx, field, ref)
	if err != nil {
		return k, err
	}
	if err := usable(k); err != nil {
		return k, err
	}
	if k.Usage != u {
		return k, errKeyUsage("key %s has usage %s; this operation needs %s", k.ID, k.Usage, u)
	}
	return k, nil
}

// hsmRef is the partition's handle on one version of a key.
func hsmRef(k cluster.Key, version uint32) (hsm.KeyRef, bool) {
	v, ok := k.Version(version)
	if !ok {
		return hsm.KeyRef{}, false
	}
	return hsm.KeyRef{ID: k.ID, Version: v.Number, Spec: k.Spec, Usage: k.Usage, Wrapped: v.Wrapped}, true
}
