package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/broker/keys"
	"github.com/hsmbroker/hsmbroker/cluster"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// RawService and DataObjectService serve libhsmbroker-pkcs11.so: raw AES on
// keys made for it, and PKCS#11 data objects.

var rawModes = map[pb.RawAlgorithm]hsm.RawMode{
	pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC:     hsm.RawCBC,
	pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC_PAD: hsm.RawCBCPad,
	pb.RawAlgorithm_RAW_ALGORITHM_AES_CTR:     hsm.RawCTR,
	pb.RawAlgorithm_RAW_ALGORITHM_AES_GCM:     hsm.RawGCM,
}

// rawOp validates a raw request's mode, IV, additional data and input, all
// before the key is looked up.
func rawOp(alg pb.RawAlgorithm, iv, aad, in []byte, encrypt bool) (hsm.RawOp, error) {
	mode, ok := rawModes[alg]
	if !ok {
		return hsm.RawOp{}, &keys.FieldError{Field: "Algorithm", Problem: "must be one of AES_CBC, AES_CBC_PAD, AES_CTR, AES_GCM"}
	}
	op := hsm.RawOp{Mode: mode, IV: iv, AAD: aad}
	if err := op.Check(in, encrypt); err != nil {
		return op, &keys.FieldError{Field: "Iv, AdditionalData or data", Problem: strings.TrimPrefix(err.Error(), hsm.ErrInvalidInput.Error()+": ")}
	}
	return op, nil
}

// rawKey resolves and authorizes a RAW_ENCRYPT_DECRYPT key and returns the
// HSM's handle on its one version.
func (s *Service) rawKey(ctx context.Context, ref string) (cluster.Key, hsm.KeyRef, error) {
	k, err := s.resolveUsable(ctx, "KeyId", ref, keys.UsageRawEncryptDecrypt)
	if err != nil {
		return k, hsm.KeyRef{}, err
	}
	r, ok := hsmRef(k, k.CurrentVersion)
	if !ok {
		return k, r, errInvalidCiphertext
	}
	return k, r, nil
}

// RawEncrypt encrypts with AES in the caller's mode and IV.
func (s *Service) RawEncrypt(ctx context.Context, req *pb.RawEncryptRequest) (*pb.RawEncryptResponse, error) {
	op, err := rawOp(req.GetAlgorithm(), req.GetIv(), req.GetAdditionalData(), req.GetPlaintext(), true)
	if err != nil {
		return nil, err
	}
	k, ref, err := s.rawKey(ctx, req.GetKeyId())
	if err != nil {
		return nil, err
	}
	ct, err := s.hsm.EncryptRaw(ctx, ref, op, req.GetPlaintext())
	if err != nil {
		return nil, err
	}
	return &pb.RawEncryptResponse{KeyId: k.ID, Ciphertext: ct}, nil
}

// RawDecrypt decrypts with AES in the caller's mode and IV.
func (s *Service) RawDecrypt(ctx context.Context, req *pb.RawDecryptRequest) (*pb.RawDecryptResponse, error) {
	op, err := rawOp(req.GetAlgorithm(), req.GetIv(), req.GetAdditionalData(), req.GetCiphertext(), false)
	if err != nil {
		return nil, err
	}
	k, ref, err := s.rawKey(ctx, req.GetKeyId())
	if err != nil {
		return nil, err
	}
	pt, err := s.hsm.DecryptRaw(ctx, ref, op, req.GetCiphertext())
	if err != nil {
		return nil, err
	}
	return &pb.RawDecryptResponse{KeyId: k.ID, Plaintext: pt}, nil
}

func dataObjectToPB(o cluster.DataObject) *pb.DataObject {
	return &pb.DataObject{Id: o.ID, Label: o.Label, Application: o.Application, ObjectId: o.ObjectID, Value: o.Value, Private: o.Private}
}

// CreateDataObject stores a data object under a new random id.
func (s *Service) CreateDataObject(ctx context.Context, req *pb.CreateDataObjectRequest) (*pb.CreateDataObjectResponse, error) {
	in := req.GetObject()
	for _, f := range []struct {
		name string
		n    int
		max  int
	}{
		{"Object.Label", len(in.GetLabel()), cluster.MaxDataObjectField},
		{"Object.Application", len(in.GetApplication()), cluster.MaxDataObjectField},
		{"Object.ObjectId", len(in.GetObjectId()), cluster.MaxDataObjectField},
		{"Object.Value", len(in.GetValue()), cluster.MaxDataObjectValue},
	} {
		if f.n > f.max {
			return nil, &keys.FieldError{Field: f.name, Problem: fmt.Sprintf("must be at most %d bytes, got %d", f.max, f.n)}
		}
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	o := cluster.DataObject{ID: hex.EncodeToString(id), Label: in.GetLabel(), Application: in.GetApplication(),
		ObjectID: in.GetObjectId(), Value: in.GetValue(), Private: in.GetPrivate(), Creator: Principal(ctx), CreatedAt: s.now()}
	// A write forwarded to the leader returns no result: answer with the
	// object as proposed, which is what every node stores.
	if _, err := s.apply(ctx, &cluster.CreateDataObject{Object: o}); err != nil {
		return nil, err
	}
	return &pb.CreateDataObjectResponse{Object: dataObjectToPB(o)}, nil
}

// ListDataObjects returns every data object.
func (s *Service) ListDataObjects(ctx context.Context, _ *pb.ListDataObjectsRequest) (*pb.ListDataObjectsResponse, error) {
	resp := &pb.ListDataObjectsResponse{}
	for _, o := range s.node.State().DataObjects() {
		resp.Objects = append(resp.Objects, dataObjectToPB(o))
	}
	return resp, nil
}

// DeleteDataObject deletes a data object.
func (s *Service) DeleteDataObject(ctx context.Context, req *pb.DeleteDataObjectRequest) (*pb.DeleteDataObjectResponse, error) {
	if _, err := hex.DecodeString(req.GetId()); err != nil || len(req.GetId()) != 32 {
		return nil, &keys.FieldError{Field: "Id", Problem: "must be 32 hex digits"}
	}
	if _, err := s.apply(ctx, &cluster.DeleteDataObject{ID: strings.ToLower(req.GetId())}); err != nil {
		return nil, err
	}
	return &pb.DeleteDataObjectResponse{}, nil
}
