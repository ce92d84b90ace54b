package client

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of the brokers' errors.
const ErrorDomain = "hsmbroker"

// callError is what a failed call returns: the gRPC status error of its
// last attempt, with the request id and the endpoint that gave it.
type callError struct {
	err       error
	requestID string
	endpoint  string
}

func (e *callError) Error() string { return e.err.Error() }
func (e *callError) Unwrap() error { return e.err }

// GRPCStatus lets status.FromError, status.Code and Code see through it.
func (e *callError) GRPCStatus() *status.Status { return status.Convert(e.err) }

// AWSException returns the AWS KMS exception name that a broker error
// carries (its google.rpc.ErrorInfo reason, such as "NotFoundException"),
// or "" if err carries none: nil, a local error, or a failure to reach any
// broker.
func AWSException(err error) string {
	return errorInfo(err).GetReason()
}

// errorInfo is the google.rpc.ErrorInfo detail of the brokers' domain that
// err carries, or nil.
func errorInfo(err error) *errdetails.ErrorInfo {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == ErrorDomain {
			return info
		}
	}
	return nil
}

// MetaNotCarriedOut is the google.rpc.ErrorInfo metadata key a broker
// sets to "true" on an error it gave before doing anything for the
// request: it refused it before passing it to the cluster's leader.
const MetaNotCarriedOut = "not_carried_out"

// NotCarriedOut reports whether the broker that answered err said it did
// nothing for the request (MetaNotCarriedOut), so that sending the request
// again, to it or another broker, cannot make a change twice.
func NotCarriedOut(err error) bool {
	return errorInfo(err).GetMetadata()[MetaNotCarriedOut] == "true"
}

// Code returns the gRPC code of err: OK for nil, the status code for gRPC
// errors (wrapped or not), Canceled and DeadlineExceeded for the context
// errors, Unknown otherwise.
func Code(err error) codes.Code {
	switch {
	case err == nil:
		return codes.OK
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return codes.Unknown
}

// Message returns err's text with every gRPC status error in its chain
// shown by its message alone, without the "rpc error: code = ... desc = "
// decoration: "decrypt data key: the ciphertext is invalid...".
func Message(err error) string {
	if err == nil {
		return ""
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		if inner, ok := gs.(error); ok {
			return strings.Replace(err.Error(), inner.Error(), gs.GRPCStatus().Message(), 1)
		}
	}
	return err.Error()
}

// RequestID returns the request id of a failed call (see RequestIDHeader),
// or "" if err did not come from a call.
func RequestID(err error) string {
	var ce *callError
	if errors.As(err, &ce) {
		return ce.requestID
	}
	return ""
}

// Endpoint returns the endpoint that gave a failed call's last error, or ""
// if err did not come from a call.
func Endpoint(err error) string {
	var ce *callError
	if errors.As(err, &ce) {
		return ce.endpoint
	}
	return ""
}
