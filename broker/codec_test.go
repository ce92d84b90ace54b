package broker_test

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawCodec sends bytes as they are, so that a test can send a message no
// protobuf library would encode.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// TestUndecodableRequestsAreInvalidArgument: a request that is no valid
// message of its method (invalid UTF-8 in a string field, broken wire data)
// is the caller's mistake, answered InvalidArgument with protobuf's reason,
// which names the field; grpc-go's own answer was Internal, "failed to
// unmarshal the received message". The call is then served as usual.
func TestUndecodableRequestsAreInvalidArgument(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	k := e.createKey(0, 0)
	var badUTF8 []byte
	badUTF8 = protowire.AppendTag(badUTF8, 1, protowire.BytesType) // key_id
	badUTF8 = protowire.AppendString(badUTF8, "\xff\xfe")
	badUTF8 = protowire.AppendTag(badUTF8, 2, protowire.BytesType) // plaintext
	badUTF8 = protowire.AppendBytes(badUTF8, []byte("x"))
	var entry []byte // an encryption context entry whose value is not UTF-8
	entry = protowire.AppendTag(entry, 1, protowire.BytesType)
	entry = protowire.AppendString(entry, "tenant")
	entry = protowire.AppendTag(entry, 2, protowire.BytesType)
	entry = protowire.AppendString(entry, "a\xc3")
	var badContext []byte
	badContext = protowire.AppendTag(badContext, 1, protowire.BytesType)
	badContext = protowire.AppendString(badContext, k.GetKeyId())
	badContext = protowire.AppendTag(badContext, 3, protowire.BytesType)
	badContext = protowire.AppendBytes(badContext, entry)
	truncated := protowire.AppendTag(nil, 1, protowire.BytesType)
	truncated = protowire.AppendVarint(truncated, 50) // 50 bytes promised, none sent
	for name, tc := range map[string]struct {
		body []byte
		want string
	}{
		"invalid UTF-8":          {badUTF8, "field key_id is not valid UTF-8"},
		"invalid UTF-8 in a map": {badContext, "field encryption_context.value is not valid UTF-8"},
		"truncated":              {truncated, "hsmbroker.v1.EncryptRequest"},
	} {
		t.Run(name, func(t *testing.T) {
			var out []byte
			err := e.conn.Invoke(ctx, "/hsmbroker.v1.CryptoService/Encrypt", tc.body, &out, grpc.ForceCodecV2(rawCodec{}))
			wantErr(t, err, codes.InvalidArgument, "ValidationException", "not a valid hsmbroker.v1.EncryptRequest message", tc.want)
		})
	}
	var good []byte
	good = protowire.AppendTag(good, 1, protowire.BytesType)
	good = protowire.AppendString(good, k.GetKeyId())
	good = protowire.AppendTag(good, 2, protowire.BytesType)
	good = protowire.AppendBytes(good, []byte("x"))
	var out []byte
	if err := e.conn.Invoke(ctx, "/hsmbroker.v1.CryptoService/Encrypt", good, &out, grpc.ForceCodecV2(rawCodec{})); err != nil || len(out) == 0 {
		t.Fatalf("a valid request after the refused ones: %v", err)
	}
}
