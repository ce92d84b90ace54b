package broker

import (
	"fmt"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// grpc-go answers a request message it cannot decode (invalid UTF-8 in a
// string field, malformed wire data) with Internal, "grpc: failed to
// unmarshal the received message", before any interceptor runs: to a
// client that reads as a fault of the server, and it carries no
// ErrorInfo. The broker's codec lets such a message through empty and
// notes why it did not decode; the interceptors take the note before
// anything else and answer InvalidArgument with protobuf's reason, which
// names the field. Nothing reads the empty message.

// requestCodec is grpc's own protobuf codec, but for decoding failures.
type requestCodec struct{ encoding.CodecV2 }

// undecoded holds, per request message, why it did not decode, until the
// interceptor of its call takes it (takeUndecoded).
var undecoded sync.Map

func newRequestCodec() requestCodec { return requestCodec{encoding.GetCodecV2("proto")} }

func (c requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	m, ok := v.(proto.Message)
	if err == nil || !ok {
		return err
	}
	if f := invalidUTF8Field(m.ProtoReflect().Descriptor(), data.Materialize(), 0); f != "" {
		err = fmt.Errorf("field %s is not valid UTF-8", f)
	}
	proto.Reset(m)
	undecoded.Store(v, err)
	return nil
}

// invalidUTF8Field names the first string field of md's message in b whose
// value is not valid UTF-8 (protobuf's own error names none), looking into
// nested messages and map entries; "" if there is none or b does not parse.
func invalidUTF8Field(md protoreflect.MessageDescriptor, b []byte, depth int) string {
	if depth > 16 {
		return ""
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return ""
		}
		val := b[:n]
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if fd == nil || typ != protowire.BytesType {
			continue
		}
		content, _ := protowire.ConsumeBytes(val)
		switch fd.Kind() {
		case protoreflect.StringKind:
			if !utf8.Valid(content) {
				return string(fd.Name())
			}
		case protoreflect.MessageKind:
			if inner := invalidUTF8Field(fd.Message(), content, depth+1); inner != "" {
				return string(fd.Name()) + "." + inner
			}
		}
	}
	return ""
}

// takeUndecoded returns the error for a request message that did not
// decode, and forgets it; nil for one that did.
func takeUndecoded(v any) error {
	e, ok := undecoded.LoadAndDelete(v)
	if !ok {
		return nil
	}
	name := "request"
	if m, ok := v.(proto.Message); ok {
		name = string(m.ProtoReflect().Descriptor().FullName())
	}
	return newError(codes.InvalidArgument, ExcValidation, "the request is not a valid %s message: %v", name, e)
}

// decodeCheckedStream is a server stream whose received messages are
// checked as a unary call's request is. A message received stops the
// tap's wait for the first one (firstMessageTimeout).
type decodeCheckedStream struct{ grpc.ServerStream }

func (s decodeCheckedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	messageArrived(s.ServerStream.Context())
	if err := takeUndecoded(m); err != nil {
		return toStatus(err).Err()
	}
	return nil
}
