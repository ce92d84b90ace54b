package broker

import (
	"fmt"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Enum names in the proto API are the AWS names with a type prefix
// (KEY_SPEC_RSA_2048 is RSA_2048); these helpers convert both ways. An
// unspecified value becomes "", a number the API does not define becomes a
// name no validator accepts, so the error names the field.

func fromEnum[E ~int32](v E, names map[int32]string, prefix string) string {
	if v == 0 {
		return ""
	}
	n, ok := names[int32(v)]
	if !ok {
		return fmt.Sprintf("UNKNOWN_%d", v)
	}
	return strings.TrimPrefix(n, prefix)
}

func toEnum[E ~int32](s string, values map[string]int32, prefix string) E {
	return E(values[prefix+s])
}

func specFrom(v pb.KeySpec) keys.Spec {
	return keys.Spec(fromEnum(v, pb.KeySpec_name, "KEY_SPEC_"))
}
func usageFrom(v pb.KeyUsage) keys.Usage {
	return keys.Usage(fromEnum(v, pb.KeyUsage_name, "KEY_USAGE_"))
}
func encAlgFrom(v pb.EncryptionAlgorithm) keys.EncryptionAlgorithm {
	return keys.EncryptionAlgorithm(fromEnum(v, pb.EncryptionAlgorithm_name, "ENCRYPTION_ALGORITHM_"))
}
func sigAlgFrom(v pb.SigningAlgorithm) keys.SigningAlgorithm {
	return keys.SigningAlgorithm(fromEnum(v, pb.SigningAlgorithm_name, "SIGNING_ALGORITHM_"))
}
func macAlgFrom(v pb.MacAlgorithm) keys.MacAlgorithm {
	return keys.MacAlgorithm(fromEnum(v, pb.MacAlgorithm_name, "MAC_ALGORITHM_"))
}
func dataKeySpecFrom(v pb.DataKeySpec) keys.DataKeySpec {
	return keys.DataKeySpec(fromEnum(v, pb.DataKeySpec_name, "DATA_KEY_SPEC_"))
}
func dataKeyPairSpecFrom(v pb.DataKeyPairSpec) keys.DataKeyPairSpec {
	return keys.DataKeyPairSpec(fromEnum(v, pb.DataKeyPairSpec_name, "DATA_KEY_PAIR_SPEC_"))
}
func messageTypeFrom(v pb.MessageType) keys.MessageType {
	return keys.MessageType(fromEnum(v, pb.MessageType_name, "MESSAGE_TYPE_"))
}

func specTo(s keys.Spec) pb.KeySpec {
	return toEnum[pb.KeySpec](string(s), pb.KeySpec_value, "KEY_SPEC_")
}
func usageTo(u keys.Usage) pb.KeyUsage {
	return toEnum[pb.KeyUsage](string(u), pb.KeyUsage_value, "KEY_USAGE_")
}
func encAlgTo(a keys.EncryptionAlgorithm) pb.EncryptionAlgorithm {
	return toEnum[pb.EncryptionAlgorithm](string(a), pb.EncryptionAlgorithm_value, "ENCRYPTION_ALGORITHM_")
}
func sigAlgTo(a keys.SigningAlgorithm) pb.SigningAlgorithm {
	return toEnum[pb.SigningAlgorithm](string(a), pb.SigningAlgorithm_value, "SIGNING_ALGORITHM_")
}
func macAlgTo(a keys.MacAlgorithm) pb.MacAlgorithm {
	return toEnum[pb.MacAlgorithm](string(a), pb.MacAlgorithm_value, "MAC_ALGORITHM_")
}
func dataKeyPairSpecTo(s keys.DataKeyPairSpec) pb.DataKeyPairSpec {
	return toEnum[pb.DataKeyPairSpec](string(s), pb.DataKeyPairSpec_value, "DATA_KEY_PAIR_SPEC_")
}

func stateTo(s keys.State) pb.KeyState {
	switch s {
	case keys.StateEnabled:
		return pb.KeyState_KEY_STATE_ENABLED
	case keys.StateDisabled:
		return pb.KeyState_KEY_STATE_DISABLED
	case keys.StatePendingDeletion:
		return pb.KeyState_KEY_STATE_PENDING_DELETION
	}
	return pb.KeyState_KEY_STATE_UNSPECIFIED
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// Region is the AWS region this service names in its ARNs; fronts that
// speak AWS protocols check request signatures against it.
func (s *Service) Region() string { return s.cfg.Region }

// Account is the 12-digit account this service names in its ARNs.
func (s *Service) Account() string { return s.cfg.Account }

// KeyARN is the ARN of a key in this service's region and account.
func (s *Service) KeyARN(id string) string {
	return "arn:aws:kms:" + s.cfg.Region + ":" + s.cfg.Account + ":key/" + id
}

// AliasARN is the ARN of an alias.
func (s *Service) AliasARN(name string) string {
	return fmt.Sprintf("arn:aws:kms:%s:%s:%s", s.cfg.Region, s.cfg.Account, name)
}

// metadata is the API view of a key.
func (s *Service) metadata(k cluster.Key) *pb.KeyMetadata {
	md := &pb.KeyMetadata{
		KeyId:             k.ID,
		Arn:               s.KeyARN(k.ID),
		Description:       k.Description,
		KeySpec:           specTo(k.Spec),
		KeyUsage:          usageTo(k.Usage),
		KeyState:          stateTo(k.State),
		CreateTime:        ts(k.CreatedAt),
		CurrentVersion:    k.CurrentVersion,
		RotationEnabled:   k.RotationEnabled,
		Creator:           k.Creator,
		Tags:              k.Tags,
		PendingWindowDays: uint32(max(k.PendingWindowDays, 0)),
	}
	if k.State == keys.StatePendingDeletion {
		md.DeletionDate = ts(k.DeletionDate)
	}
	for _, a := range s.node.State().Aliases(k.ID) {
		md.AliasNames = append(md.AliasNames, a.Name)
	}
	for _, a := range k.Spec.EncryptionAlgorithms(k.Usage) {
		md.EncryptionAlgorithms = append(md.EncryptionAlgorithms, encAlgTo(a))
	}
	for _, a := range k.Spec.SigningAlgorithms(k.Usage) {
		md.SigningAlgorithms = append(md.SigningAlgorithms, sigAlgTo(a))
	}
	if k.Usage == keys.UsageGenerateVerifyMAC {
		for _, a := range k.Spec.MacAlgorithms() {
			md.MacAlgorithms = append(md.MacAlgorithms, macAlgTo(a))
		}
	}
	return md
}
