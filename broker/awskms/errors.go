package awskms

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/hsmbroker/hsmbroker/broker"
	"google.golang.org/grpc/codes"
)

// Exceptions of the AWS JSON protocol itself, beyond those of the broker
// core (broker.Exc*).
const (
	excSerialization      = "SerializationException"
	excUnknownOperation   = "UnknownOperationException"
	excDryRun             = "DryRunOperationException"
	excTag                = "TagException"
	msgDryRunWouldSucceed = "The request would have succeeded, but the DryRun option is set."
)

// apiError is an answer decided by this front rather than by the core.
type apiError struct {
	status    int
	exception string
	message   string
}

func (e *apiError) Error() string { return e.exception + ": " + e.message }

func validation(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, broker.ExcValidation, fmt.Sprintf(format, args...)}
}

func unsupported(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, broker.ExcUnsupportedOperation, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *apiError {
	return &apiError{http.StatusBadRequest, broker.ExcNotFound, fmt.Sprintf(format, args...)}
}

// classify turns any error of an operation into the HTTP status, AWS
// exception name and message of the answer. Errors of the core go through
// broker.Classify, the one mapping of core errors to AWS names.
func classify(err error) (status int, exception, message string) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status, ae.exception, ae.message
	}
	var au *authError
	if errors.As(err, &au) {
		return http.StatusBadRequest, au.exception, au.message
	}
	code, exc, msg := broker.Classify(err)
	return statusFor(code), exc, msg
}

// statusFor is the HTTP status of a core error: 400 for the caller's
// mistakes, 503 for conditions a retry may clear (no leader, HSM down,
// timeouts), 500 for the rest.
func statusFor(c codes.Code) int {
	switch c {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return http.StatusServiceUnavailable
	case codes.Internal, codes.Unknown, codes.DataLoss:
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}
