package client

import (
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// idempotentMethods are the RPCs that may safely run twice: reads, crypto
// operations that change no state, and writes whose repetition converges on
// the same state and answer. Every other RPC, including any added to the API
// later, is treated as non-idempotent: CreateKey, RotateKey, CreateAlias,
// the GenerateDataKey family (a repeat makes a second key or alias, or
// another data key than the one the caller may already hold),
// ScheduleKeyDeletion, CancelKeyDeletion, DeleteAlias and RevokeJoinToken
// (a repeat of a success answers an error for a change that was made), and
// the cluster changes. Backup is a stream: it is retried only until its
// first message arrives (see router.NewStream).
var idempotentMethods = map[string]bool{
	pb.KeyService_DescribeKey_FullMethodName:          true,
	pb.KeyService_ListKeys_FullMethodName:             true,
	pb.KeyService_UpdateKeyDescription_FullMethodName: true,
	pb.KeyService_EnableKey_FullMethodName:            true,
	pb.KeyService_DisableKey_FullMethodName:           true,
	pb.KeyService_ListKeyVersions_FullMethodName:      true,
	pb.KeyService_TagKey_FullMethodName:               true,
	pb.KeyService_UntagKey_FullMethodName:             true,
	pb.KeyService_ListKeyTags_FullMethodName:          true,
	pb.KeyService_UpdateAlias_FullMethodName:          true,
	pb.KeyService_ListAliases_FullMethodName:          true,

	pb.CryptoService_Encrypt_FullMethodName:             true,
	pb.CryptoService_Decrypt_FullMethodName:             true,
	pb.CryptoService_ReEncrypt_FullMethodName:           true,
	pb.CryptoService_GetPublicKey_FullMethodName:        true,
	pb.CryptoService_Sign_FullMethodName:                true,
	pb.CryptoService_Verify_FullMethodName:              true,
	pb.CryptoService_GenerateMac_FullMethodName:         true,
	pb.CryptoService_VerifyMac_FullMethodName:           true,
	pb.CryptoService_GenerateRandom_FullMethodName:      true,
	pb.RawService_RawEncrypt_FullMethodName:             true,
	pb.RawService_RawDecrypt_FullMethodName:             true,
	pb.DataObjectService_ListDataObjects_FullMethodName: true,

	pb.ClusterService_GetClusterStatus_FullMethodName: true,
	pb.ClusterService_Backup_FullMethodName:           true,
	pb.ClusterService_VerifyBackup_FullMethodName:     true,
	pb.ClusterService_ListJoinTokens_FullMethodName:   true,
}

// Idempotent reports whether the client retries the RPC method (a full
// method name such as "/hsmbroker.v1.KeyService/DescribeKey") after
// failures that may have reached the broker; see the package doc. A
// streaming method is retried only until its first message arrives.
func Idempotent(method string) bool { return idempotentMethods[method] }

// failover reports whether err says that the endpoint, rather than the
// request, is at fault, so another endpoint may do better: the endpoint is
// unreachable or has no leader or HSM (Unavailable), did not answer in time
// (DeadlineExceeded), its HSM is saturated (ResourceExhausted with
// ThrottlingException), or it refused the request before doing anything
// for it, as a node removed from the cluster does (FailedPrecondition
// marked not carried out). Other ResourceExhausted errors, such as
// LimitExceededException or gRPC's message size limit, are permanent.
func failover(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	case codes.ResourceExhausted:
		return AWSException(err) == "ThrottlingException"
	case codes.FailedPrecondition:
		return NotCarriedOut(err)
	}
	return false
}

// retryable reports whether a failed attempt may be retried. Idempotent
// calls retry every failover error. Non-idempotent calls retry only a
// failover error that certainly left nothing done: an Unavailable error
// raised before the request was sent (no connection could take it), or one
// the broker marked as not carried out (it refused the request before
// passing it to a leader). Any other failure may hide a request that the
// broker carried out.
func retryable(err error, idempotent, sent bool) bool {
	if idempotent {
		return failover(err)
	}
	return !sent && status.Code(err) == codes.Unavailable || failover(err) && NotCarriedOut(err)
}
