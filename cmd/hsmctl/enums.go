package main

import (
	"fmt"
	"slices"
	"strings"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// enum maps the AWS names that flags take (RSA_2048) to a proto enum whose
// values carry them after a prefix (KEY_SPEC_RSA_2048), and back.
type enum struct {
	prefix string
	values map[string]int32 // the generated <Enum>_value map
	names  map[int32]string // the generated <Enum>_name map
}

var (
	keySpecs       = enum{"KEY_SPEC_", pb.KeySpec_value, pb.KeySpec_name}
	keyUsages      = enum{"KEY_USAGE_", pb.KeyUsage_value, pb.KeyUsage_name}
	encryptionAlgs = enum{"ENCRYPTION_ALGORITHM_", pb.EncryptionAlgorithm_value, pb.EncryptionAlgorithm_name}
	signingAlgs    = enum{"SIGNING_ALGORITHM_", pb.SigningAlgorithm_value, pb.SigningAlgorithm_name}
	macAlgs        = enum{"MAC_ALGORITHM_", pb.MacAlgorithm_value, pb.MacAlgorithm_name}
	dataKeySpecs   = enum{"DATA_KEY_SPEC_", pb.DataKeySpec_value, pb.DataKeySpec_name}
	nodeRoles      = enum{"NODE_ROLE_", pb.NodeRole_value, pb.NodeRole_name}
)

// valid returns the AWS names of every value but UNSPECIFIED, in enum
// order.
func (e enum) valid() []string {
	nums := make([]int32, 0, len(e.names))
	for n := range e.names {
		if n != 0 {
			nums = append(nums, n)
		}
	}
	slices.Sort(nums)
	out := make([]string, len(nums))
	for i, n := range nums {
		out[i] = strings.TrimPrefix(e.names[n], e.prefix)
	}
	return out
}

// parse maps an AWS name, in any case, with or without the proto prefix,
// to its value. An unknown name is a usage error listing the valid ones.
func (e enum) parse(flag, s string) (int32, error) {
	name := strings.ToUpper(strings.TrimSpace(s))
	name = strings.TrimPrefix(name, e.prefix)
	if v, ok := e.values[e.prefix+name]; ok && v != 0 {
		return v, nil
	}
	return 0, usageErr(fmt.Sprintf("invalid %s %q: valid values are %s", flag, s, strings.Join(e.valid(), ", ")))
}

// name is the AWS name of v, or "" for UNSPECIFIED, or the number for a
// value this program does not know.
func (e enum) name(v int32) string {
	if v == 0 {
		return ""
	}
	if n, ok := e.names[v]; ok {
		return strings.TrimPrefix(n, e.prefix)
	}
	return fmt.Sprint(v)
}

// keyStateName is AWS's spelling of key states, the one enum that differs.
func keyStateName(s pb.KeyState) string {
	switch s {
	case pb.KeyState_KEY_STATE_ENABLED:
		return "Enabled"
	case pb.KeyState_KEY_STATE_DISABLED:
		return "Disabled"
	case pb.KeyState_KEY_STATE_PENDING_DELETION:
		return "PendingDeletion"
	case pb.KeyState_KEY_STATE_UNSPECIFIED:
		return ""
	}
	return fmt.Sprint(int32(s))
}

func names[E ~int32](e enum, vs []E) []string {
	out := make([]string, 0, len(vs))
	for _, v := range vs {
		out = append(out, e.name(int32(v)))
	}
	return out
}

// enumHelp is the flag help suffix listing valid values.
func enumHelp(e enum) string { return "one of " + strings.Join(e.valid(), ", ") }
