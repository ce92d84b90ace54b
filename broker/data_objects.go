package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
	"google.golang.org/grpc/codes"
)

// Bounds the fronts put on data objects, below the replicated state's own
// (cluster.MaxDataObjects): ListDataObjects answers them all at once, and
// a gRPC client reads at most 4 MiB by default.
const (
	// MaxDataObjectsPerPrincipal is the most data objects one principal
	// may have made, so that no one caller takes the cluster's 1,024.
	MaxDataObjectsPerPrincipal = cluster.MaxDataObjects / 4
	// MaxDataObjectBytes is the most the values of all data objects take,
	// and MaxDataObjectBytesPerPrincipal the most those of one
	// principal's take.
	MaxDataObjectBytes             = 2 << 20
	MaxDataObjectBytesPerPrincipal = MaxDataObjectBytes / 4
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
		if !utf8.ValidString(f.v) || strings.ContainsFunc(f.v, keys.IsDisplayControl) {
			return cluster.DataObject{}, &keys.FieldError{Field: f.name, Problem: "must be UTF-8 text without control characters or bidirectional formatting characters (PKCS#11 labels are shown by tools such as pkcs11-tool)"}
		}
	}
	// Every caller lists every data object in one answer, so no one
	// principal may take the cluster's room for them, nor make that answer
	// larger than a client reads.
	all, valueBytes, mine, mineBytes := d.s.node.State().DataObjectUsage(Principal(ctx))
	switch {
	case mine >= MaxDataObjectsPerPrincipal:
		return cluster.DataObject{}, newError(codes.FailedPrecondition, ExcLimitExceeded,
			"%s already made %d data objects, the most one principal may; delete some first", Principal(ctx), mine)
	case mineBytes+len(req.Value) > MaxDataObjectBytesPerPrincipal:
		return cluster.DataObject{}, newError(codes.FailedPrecondition, ExcLimitExceeded,
			"the values of %s's data objects would take %d bytes, more than the %d one principal may; delete some first",
			Principal(ctx), mineBytes+len(req.Value), MaxDataObjectBytesPerPrincipal)
	case valueBytes+len(req.Value) > MaxDataObjectBytes:
		return cluster.DataObject{}, newError(codes.FailedPrecondition, ExcLimitExceeded,
			"the data objects' values would take %d bytes, more than the %d the cluster keeps (%d objects)", valueBytes+len(req.Value), MaxDataObjectBytes, all)
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return cluster.DataObject{}, err
	}
	o := cluster.DataObject{ID: hex.EncodeToString(id), Label: req.Label, Application: req.Application,
		ObjectID: req.ObjectID, Value: req.Value, Private: req.Private, Creator: Principal(ctx), CreatedAt: d.s.now()}
	// A write forwarded to the leader returns no result: answer with the
	// object as proposed, which is what every node stores.
	if _, err := d.s.apply(ctx, &cluster.CreateDataObject{Object: o}); err != nil {
		return cluster.DataObject{}, err
	}
	return o, nil
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
