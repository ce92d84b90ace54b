package broker

import (
	"context"
	"time"

	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	"google.golang.org/grpc/codes"
)

// RotationPeriodDays is the period of automatic rotation, AWS KMS's
// default. The replicated state records whether a key rotates, not how
// often, so every rotating key has this period.
const RotationPeriodDays = 365

const rotationPeriod = RotationPeriodDays * 24 * time.Hour

// RotationStatus is a key's automatic rotation setting.
type RotationStatus struct {
	KeyID   string
	Enabled bool
	// PeriodDays and NextRotation are set only while Enabled. The next
	// rotation is due a period after the current version was made.
	PeriodDays   int32
	NextRotation time.Time
}

// Rotation is one completed rotation: the version it made and when.
type Rotation struct {
	Version uint32
	Date    time.Time
}

// errRotationUnsupported is AWS's answer for keys that do not rotate.
func errRotationUnsupported(k cluster.Key) error {
	return errUnsupported("key %s (%s, usage %s) does not rotate; only symmetric encryption keys (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT) do", k.ID, k.Spec, k.Usage)
}

// rotationState refuses rotation changes on keys that are not enabled, with
// AWS's exception: KMSInvalidStateException for disabled keys too, since a
// disabled key is not being used in a cryptographic operation here.
func rotationState(k cluster.Key) error {
	if k.State != keys.StateEnabled {
		return newError(codes.FailedPrecondition, ExcInvalidState, "key %s is %s; rotation settings change only on enabled keys", k.ID, k.State)
	}
	return nil
}

// SetKeyRotation turns automatic rotation of a symmetric key on or off.
func (s *Service) SetKeyRotation(ctx context.Context, ref string, enabled bool) error {
	k, err := s.resolveID(ctx, "KeyId", ref)
	if err != nil {
		return err
	}
	if k.Spec != keys.SpecSymmetricDefault || k.Usage == keys.UsageRawEncryptDecrypt {
		return errRotationUnsupported(k)
	}
	if err := rotationState(k); err != nil {
		return err
	}
	_, err = s.apply(ctx, &cluster.SetRotation{KeyID: k.ID, Enabled: enabled})
	return err
}

// KeyRotationStatus reports a key's automatic rotation setting. A key
// pending deletion reports rotation off, as AWS KMS does: it will not
// rotate.
func (s *Service) KeyRotationStatus(ctx context.Context, ref string) (RotationStatus, error) {
	k, err := s.resolve(ctx, "KeyId", ref)
	if err != nil {
		return RotationStatus{}, err
	}
	if k.Spec != keys.SpecSymmetricDefault {
		return RotationStatus{}, errRotationUnsupported(k)
	}
	st := RotationStatus{KeyID: k.ID, Enabled: k.RotationEnabled && k.State != keys.StatePendingDeletion}
	if st.Enabled {
		st.PeriodDays = RotationPeriodDays
		st.NextRotation = nextRotation(k)
	}
	return st, nil
}

func nextRotation(k cluster.Key) time.Time {
	v, _ := k.Version(k.CurrentVersion)
	return v.CreatedAt.Add(rotationPeriod)
}

// KeyRotations lists the completed rotations of a symmetric key, oldest
// first: every version after the first.
func (s *Service) KeyRotations(ctx context.Context, ref string) (cluster.Key, []Rotation, error) {
	k, err := s.resolve(ctx, "KeyId", ref)
	if err != nil {
		return k, nil, err
	}
	if k.Spec != keys.SpecSymmetricDefault {
		return k, nil, errRotationUnsupported(k)
	}
	rs := []Rotation{}
	for _, v := range k.Versions {
		if v.Number > 1 {
			rs = append(rs, Rotation{Version: v.Number, Date: v.CreatedAt})
		}
	}
	return k, rs, nil
}
