package broker

import (
	"testing"
	"unicode/utf8"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzInvalidUTF8Field: the field finder reads bytes anyone can send. It
// never panics, and what it names is a string field path of the message
// whose value, decoded as that message, fails protobuf's own UTF-8 check.
func FuzzInvalidUTF8Field(f *testing.F) {
	for _, m := range []proto.Message{
		&pb.EncryptRequest{KeyId: "alias/x", Plaintext: []byte("p"), EncryptionContext: map[string]string{"k": "v"}},
		&pb.CreateKeyRequest{AliasName: "alias/a", Description: "d", Tags: map[string]string{"t": "v"}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("\x0a\x02\xff\xfe"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range []proto.Message{&pb.EncryptRequest{}, &pb.CreateKeyRequest{}} {
			name := invalidUTF8Field(m.ProtoReflect().Descriptor(), b, 0)
			if name == "" {
				continue
			}
			if err := proto.Unmarshal(b, m); err == nil {
				t.Fatalf("%T: named %q for a message that decodes", m, name)
			}
			if !utf8.ValidString(name) {
				t.Fatalf("field path %q", name)
			}
		}
	})
}
