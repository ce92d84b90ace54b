package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	"google.golang.org/grpc/codes"
)

// DataObjects is the core of DataObjectService (raw_grpc.go): PKCS#11 data
// objects (CKO_DATA) of libhsmbroker-pkcs11.so, kept in the replicated
// state (cluster/command_pkcs11.go). Its errors name the fields of
// DataObjectService's messages.
type DataObjects struct{ s *Service }

// DataObjects returns the data object core of s.
func (s *Service) DataObjects() *DataObjects { return &DataObjects{s: s} }

// DataObjectCreateRequest is a new data object's attributes.
type DataObjectCreateRequest struct {
	Label       string // CKA_LABEL, at most cluster.MaxDataObjectField bytes
	Application string // CKA_APPLICATION, as long
	ObjectID    []byte // CKA_OBJECT_ID (DER), as long
	Value       []byte // CKA_VALUE, at most cluster.MaxDataObjectValue bytes
	Private     bool   // CKA_PRIVATE
}

// Create stores a data object under a new random id and returns it as
// every node stores it.
func (d *DataObjects) Create(ctx context.Context, req DataObjectCreateRequest) (cluster.DataObject, error) {
	for _, f := range []struct {
		name string
		n    int
		max  int
	}{
		{"Object.Label", len(req.Label), cluster.MaxDataObjectField},
		{"Object.Application", len(req.Application), cluster.MaxDataObjectField},
		{"Object.ObjectId", len(req.ObjectID), cluster.MaxDataObjectField},
		{"Object.Value", len(req.Value), cluster.MaxDataObjectValue},
	} {
		if f.n > f.max {
			return cluster.DataObject{}, &keys.FieldError{Field: f.name, Problem: fmt.Sprintf("must be at most %d bytes, got %d", f.max, f.n)}
		}
	}
	for _, f := range []struct{ name, v string }{{"Object.Label", req.Label}, {"Object.Application", req.Application}} {
		if !keys.IsDisplayText(f.v) {
			return cluster.DataObject{}, &keys.FieldError{Field: f.name, Problem: "must be UTF-8 text without control characters or bidirectional formatting characters (PKCS#11 labels are shown by tools such as pkcs11-tool)"}
		}
	}
	if err := dataObjectCreateFailed(d.s.node.State().DataObjectRoom(Principal(ctx), len(req.Value))); err != nil {
		return cluster.DataObject{}, err
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return cluster.DataObject{}, err
	}
	o := cluster.DataObject{ID: hex.EncodeToString(id), Label: req.Label, Application: req.Application,
		ObjectID: req.ObjectID, Value: req.Value, Private: req.Private, Creator: Principal(ctx), CreatedAt: d.s.now()}
	// A write forwarded to the leader returns no result: answer with the
	// object as proposed, which is what every node stores.
	if _, err := d.s.apply(ctx, &cluster.CreateDataObject{Object: o, Bounded: true}); err != nil {
		return cluster.DataObject{}, dataObjectCreateFailed(err)
	}
	return o, nil
}

// dataObjectCreateFailed is the error of a data object that the cluster's
// bounds refuse (cluster.MaxDataObjects and the bounds beside it), before
// it is proposed or in the apply: the only invalid state a create meets.
func dataObjectCreateFailed(err error) error {
	if errors.Is(err, cluster.ErrInvalidState) {
		return newError(codes.FailedPrecondition, ExcLimitExceeded, "%s", detail(err, cluster.ErrInvalidState))
	}
	return err
}

// List returns every data object.
func (d *DataObjects) List(ctx context.Context) ([]cluster.DataObject, error) {
	return d.s.node.State().DataObjects(), nil
}

// Delete deletes the data object with id (32 hex digits).
func (d *DataObjects) Delete(ctx context.Context, id string) error {
	if _, err := hex.DecodeString(id); err != nil || len(id) != 32 {
		return &keys.FieldError{Field: "Id", Problem: "must be 32 hex digits"}
	}
	_, err := d.s.apply(ctx, &cluster.DeleteDataObject{ID: strings.ToLower(id)})
	return err
}
