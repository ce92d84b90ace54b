package broker

import (
	"context"

	"github.com/hsmbroker/hsmbroker/broker/hsm"
	"github.com/hsmbroker/hsmbroker/cluster"
	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// rawServer and dataObjectServer are the gRPC adapters of RawService and
// DataObjectService (libhsmbroker-pkcs11.so's calls): each decodes a
// request, calls one method of its core, and encodes the result. The
// interceptors have applied the role gate and write the audit line.
type rawServer struct {
	pb.UnimplementedRawServiceServer
	core *RawAES
}

type dataObjectServer struct {
	pb.UnimplementedDataObjectServiceServer
	core *DataObjects
}

// rawModes maps RawService's algorithms onto the partition's modes; an
// algorithm not here becomes mode 0, which the core refuses.
var rawModes = map[pb.RawAlgorithm]hsm.RawMode{
	pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC:     hsm.RawCBC,
	pb.RawAlgorithm_RAW_ALGORITHM_AES_CBC_PAD: hsm.RawCBCPad,
	pb.RawAlgorithm_RAW_ALGORITHM_AES_CTR:     hsm.RawCTR,
	pb.RawAlgorithm_RAW_ALGORITHM_AES_GCM:     hsm.RawGCM,
}

func (r rawServer) RawEncrypt(ctx context.Context, req *pb.RawEncryptRequest) (*pb.RawEncryptResponse, error) {
	out, err := r.core.Encrypt(ctx, RawRequest{KeyID: req.GetKeyId(), Mode: rawModes[req.GetAlgorithm()], IV: req.GetIv(),
		AAD: req.GetAdditionalData(), Data: req.GetPlaintext()})
	if err != nil {
		return nil, err
	}
	return &pb.RawEncryptResponse{KeyId: out.KeyID, Ciphertext: out.Data}, nil
}

func (r rawServer) RawDecrypt(ctx context.Context, req *pb.RawDecryptRequest) (*pb.RawDecryptResponse, error) {
	out, err := r.core.Decrypt(ctx, RawRequest{KeyID: req.GetKeyId(), Mode: rawModes[req.GetAlgorithm()], IV: req.GetIv(),
		AAD: req.GetAdditionalData(), Data: req.GetCiphertext()})
	if err != nil {
		return nil, err
	}
	return &pb.RawDecryptResponse{KeyId: out.KeyID, Plaintext: out.Data}, nil
}

func dataObjectToPB(o cluster.DataObject) *pb.DataObject {
	return &pb.DataObject{Id: o.ID, Label: o.Label, Application: o.Application, ObjectId: o.ObjectID, Value: o.Value, Private: o.Private}
}

func (d dataObjectServer) CreateDataObject(ctx context.Context, req *pb.CreateDataObjectRequest) (*pb.CreateDataObjectResponse, error) {
	in := req.GetObject()
	o, err := d.core.Create(ctx, DataObjectCreateRequest{Label: in.GetLabel(), Application: in.GetApplication(),
		ObjectID: in.GetObjectId(), Value: in.GetValue(), Private: in.GetPrivate()})
	if err != nil {
		return nil, err
	}
	return &pb.CreateDataObjectResponse{Object: dataObjectToPB(o)}, nil
}

func (d dataObjectServer) ListDataObjects(ctx context.Context, _ *pb.ListDataObjectsRequest) (*pb.ListDataObjectsResponse, error) {
	objs, err := d.core.List(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListDataObjectsResponse{}
	for _, o := range objs {
		resp.Objects = append(resp.Objects, dataObjectToPB(o))
	}
	return resp, nil
}

func (d dataObjectServer) DeleteDataObject(ctx context.Context, req *pb.DeleteDataObjectRequest) (*pb.DeleteDataObjectResponse, error) {
	if err := d.core.Delete(ctx, req.GetId()); err != nil {
		return nil, err
	}
	return &pb.DeleteDataObjectResponse{}, nil
}
