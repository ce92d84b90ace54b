package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every error detail.
const ErrorDomain = "hsmbroker"

// AWS KMS exception names, carried as the ErrorInfo reason so that the AWS
// front and clients can tell errors apart exactly as AWS SDKs do.
const (
	ExcNotFound             = "NotFoundException"
	ExcAlreadyExists        = "AlreadyExistsException"
	ExcDisabled             = "DisabledException"
	ExcInvalidState         = "KMSInvalidStateException"
	ExcInvalidCiphertext    = "InvalidCiphertextException"
	ExcIncorrectKey         = "IncorrectKeyException"
	ExcInvalidKeyUsage      = "InvalidKeyUsageException"
	ExcValidation           = "ValidationException"
	ExcInvalidAliasName     = "InvalidAliasNameException"
	ExcInvalidMarker        = "InvalidMarkerException"
	ExcInvalidGrantID       = "InvalidGrantIdException"
	ExcUnsupportedOperation = "UnsupportedOperationException"
	ExcAccessDenied         = "AccessDeniedException"
	ExcDependencyTimeout    = "DependencyTimeoutException"
	ExcThrottling           = "ThrottlingException"
	ExcInternal             = "KMSInternalException"
	ExcInvalidSignature     = "KMSInvalidSignatureException"
	ExcInvalidMac           = "KMSInvalidMacException"
	ExcLimitExceeded        = "LimitExceededException"
	ExcUnauthenticated      = "UnrecognizedClientException"
)

// Error is a broker error with its gRPC code and AWS exception name. The
// message is for the caller: it names the field, key or state at fault and
// never carries key material, plaintext or PINs.
type Error struct {
	Code      codes.Code
	Exception string
	Message   string
	Err       error // the cause, if any (not shown to callers)
	// NotCarriedOut says that this node did nothing for the request: it
	// refused it before passing it to the leader (it has none, was
	// removed, or could not reach it). The status carries it
	// (MetaNotCarriedOut), so a client may send even a write to another
	// node without risk of making it twice.
	NotCarriedOut bool
}

// MetaNotCarriedOut is the google.rpc.ErrorInfo metadata key, with value
// "true", of an error whose Error.NotCarriedOut is set.
const MetaNotCarriedOut = "not_carried_out"

// notCarriedOut marks err, if it is an *Error, as refused before the node
// did anything for the request (Error.NotCarriedOut).
func notCarriedOut(err error) error {
	var be *Error
	if !errors.As(err, &be) {
		return err
	}
	marked := *be
	marked.NotCarriedOut = true
	return &marked
}

func (e *Error) Error() string { return e.Message }

// Unwrap exposes the cause to errors.Is.
func (e *Error) Unwrap() error { return e.Err }

func newError(code codes.Code, exc, format string, args ...any) *Error {
	return &Error{Code: code, Exception: exc, Message: fmt.Sprintf(format, args...)}
}

func errNotFound(format string, args ...any) *Error {
	return newError(codes.NotFound, ExcNotFound, format, args...)
}

func errInvalidArg(exc, format string, args ...any) *Error {
	return newError(codes.InvalidArgument, exc, format, args...)
}

func errKeyUsage(format string, args ...any) *Error {
	return newError(codes.InvalidArgument, ExcInvalidKeyUsage, format, args...)
}

func errUnsupported(format string, args ...any) *Error {
	// FailedPrecondition, as key.proto documents: the method exists, the
	// key (or request) is what it does not apply to. Unimplemented would
	// tell a gRPC client that the server lacks the method.
	return newError(codes.FailedPrecondition, ExcUnsupportedOperation, format, args...)
}

// errInvalidCiphertext is the one answer to every symmetric decryption
// failure (malformed blob, unknown key version, wrong context, failed tag):
// telling them apart would make an oracle.
var errInvalidCiphertext = &Error{Code: codes.InvalidArgument, Exception: ExcInvalidCiphertext,
	Message: keys.InvalidCiphertextMessage}

// Classify returns the gRPC code and AWS exception name of any error the
// core returns.
func Classify(err error) (codes.Code, string, string) {
	var be *Error
	switch {
	case err == nil:
		return codes.OK, "", ""
	case errors.As(err, &be):
		return be.Code, be.Exception, be.Message
	case errors.Is(err, context.Canceled):
		return codes.Canceled, ExcDependencyTimeout, "request canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded, ExcDependencyTimeout, "request deadline exceeded"
	case errors.Is(err, keys.ErrInvalidCiphertext), errors.Is(err, hsm.ErrDecrypt):
		return errInvalidCiphertext.Code, errInvalidCiphertext.Exception, errInvalidCiphertext.Message
	case errors.Is(err, keys.ErrInvalidKeyUsage):
		return codes.InvalidArgument, ExcInvalidKeyUsage, err.Error()
	case errors.Is(err, keys.ErrInvalidArgument):
		return codes.InvalidArgument, ExcValidation, err.Error()
	case errors.Is(err, cluster.ErrNotFound):
		return codes.NotFound, ExcNotFound, detail(err, cluster.ErrNotFound) + " does not exist"
	case errors.Is(err, cluster.ErrAlreadyExists):
		return codes.AlreadyExists, ExcAlreadyExists, detail(err, cluster.ErrAlreadyExists) + " already exists"
	case errors.Is(err, cluster.ErrInvalidState):
		return codes.FailedPrecondition, ExcInvalidState, detail(err, cluster.ErrInvalidState)
	case errors.Is(err, cluster.ErrInvalidCommand):
		return codes.InvalidArgument, ExcValidation, detail(err, cluster.ErrInvalidCommand)
	case errors.Is(err, cluster.ErrLeadershipLost), errors.Is(err, cluster.ErrShutdown):
		return codes.Unavailable, ExcDependencyTimeout, "the cluster lost its leader while applying the write; re-read before retrying: " + err.Error()
	case errors.Is(err, cluster.ErrNotLeader):
		return codes.Unavailable, ExcDependencyTimeout, "no cluster leader reachable for writes; retry: " + err.Error()
	case errors.Is(err, hsm.ErrBusy):
		return codes.ResourceExhausted, ExcThrottling, "the HSM is saturated; retry with backoff"
	case errors.Is(err, hsm.ErrUnavailable), errors.Is(err, hsm.ErrNoDomainKey), errors.Is(err, hsm.ErrLogin):
		return codes.Unavailable, ExcDependencyTimeout, "the HSM is unavailable on this node; retry or use another node"
	}
	return codes.Internal, ExcInternal, "internal error"
}

// detail is what err says beyond sentinel, the error it wraps: the
// message a caller reads without the chain of package prefixes on the way
// ("replicate CreateTDEKey: cluster: already exists: TDE key "1" ..."
// gives `TDE key "1" ...`). The code and exception already say what kind
// of error it is; the log keeps the whole chain.
func detail(err, sentinel error) string {
	msg := err.Error()
	if i := strings.Index(msg, sentinel.Error()+": "); i >= 0 {
		return msg[i+len(sentinel.Error())+2:]
	}
	return msg
}

// toStatus is the one place where errors become gRPC statuses. A status
// that arrived from another node (a forwarded write) passes through; every
// other error is classified. Internal errors are logged by the interceptor
// with their cause; the caller sees only a generic message.
func toStatus(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	var be *Error
	if !errors.As(err, &be) {
		if st, ok := status.FromError(err); ok {
			return st
		}
	}
	code, exc, msg := Classify(err)
	st := status.New(code, msg)
	info := &errdetails.ErrorInfo{Reason: exc, Domain: ErrorDomain}
	if be != nil && be.NotCarriedOut {
		info.Metadata = map[string]string{MetaNotCarriedOut: "true"}
	}
	if withInfo, derr := st.WithDetails(info); derr == nil {
		return withInfo
	}
	return st
}
