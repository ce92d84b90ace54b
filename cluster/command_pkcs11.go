package cluster

import (
	"bytes"
	"encoding/hex"
	"sort"
	"time"
	"unicode/utf8"
)

// Commands of the PKCS#11 library's data objects (type bytes 50-59).
const (
	TypeCreateDataObject CommandType = 50
	TypeDeleteDataObject CommandType = 51
)

// Bounds of data objects: Oracle's TDE keeps a few small ones. Every
// caller lists every data object in one answer, so no one creator may take
// the cluster's room for them, nor make that answer larger than a gRPC
// client reads by default (4 MiB). The apply enforces them all
// (dataObjectRoom), so concurrent creates cannot pass them together.
const (
	MaxDataObjects     = 1024
	MaxDataObjectValue = 64 << 10
	MaxDataObjectField = 256
	// MaxDataObjectsPerCreator is the most data objects one principal may
	// have made.
	MaxDataObjectsPerCreator = MaxDataObjects / 4
	// MaxDataObjectBytes is the most the values of all data objects take,
	// and MaxDataObjectBytesPerCreator the most those of one creator's
	// take.
	MaxDataObjectBytes           = 2 << 20
	MaxDataObjectBytesPerCreator = MaxDataObjectBytes / 4
)

// DataObject is a PKCS#11 CKO_DATA object made through
// libhsmbroker-pkcs11.so. It holds application data, not key material.
type DataObject struct {
	ID          string    `json:"id"` // 32 lower-case hex digits
	Label       string    `json:"label"`
	Application string    `json:"application,omitempty"`
	ObjectID    []byte    `json:"object_id,omitempty"`
	Value       []byte    `json:"value,omitempty"`
	Private     bool      `json:"private,omitempty"`
	Creator     string    `json:"creator,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// Clone returns a deep copy of o.
func (o DataObject) Clone() DataObject {
	o.ObjectID = bytes.Clone(o.ObjectID)
	o.Value = bytes.Clone(o.Value)
	return o
}

// CreateDataObject stores a new data object. Its result is the DataObject.
type CreateDataObject struct {
	Object DataObject `json:"object"`
	// Bounded makes the apply hold the object to the creator's and the
	// values' bounds (dataObjectRoom), so that creates proposed together
	// cannot pass them. Log entries written before the apply checked
	// them lack it, and replay as they were first applied.
	Bounded bool `json:"bounded,omitempty"`
}

// DeleteDataObject removes a data object. Its result is nil.
type DeleteDataObject struct {
	ID string `json:"id"`
}

func (*CreateDataObject) Type() CommandType { return TypeCreateDataObject }
func (*DeleteDataObject) Type() CommandType { return TypeDeleteDataObject }

func checkDataObjectID(id string) error {
	if len(id) != 32 || hex.EncodeToString(mustHex(id)) != id {
		return invalidCommand("data object id %q is not 32 lower-case hex digits", id)
	}
	return nil
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil
	}
	return b
}

func (o *DataObject) check() error {
	if err := checkDataObjectID(o.ID); err != nil {
		return err
	}
	for _, f := range []struct{ what, v string }{{"label", o.Label}, {"application", o.Application}, {"creator", o.Creator}} {
		if len(f.v) > MaxDataObjectField || !utf8.ValidString(f.v) {
			return invalidCommand("data object %s must be at most %d bytes of UTF-8", f.what, MaxDataObjectField)
		}
	}
	if len(o.ObjectID) > MaxDataObjectField {
		return invalidCommand("data object object_id must be at most %d bytes", MaxDataObjectField)
	}
	if len(o.Value) > MaxDataObjectValue {
		return invalidCommand("data object value must be at most %d bytes, got %d", MaxDataObjectValue, len(o.Value))
	}
	return checkTime("created_at", o.CreatedAt, true)
}

func (c *CreateDataObject) validate() error { return c.Object.check() }

func (c *DeleteDataObject) validate() error { return checkDataObjectID(c.ID) }

func (c *CreateDataObject) apply(d *Data) (any, Event, error) {
	if d.DataObjects == nil {
		d.DataObjects = map[string]*DataObject{}
	}
	if _, ok := d.DataObjects[c.Object.ID]; ok {
		return nil, Event{}, alreadyExists("data object %q", c.Object.ID)
	}
	if !c.Bounded && len(d.DataObjects) >= MaxDataObjects {
		return nil, Event{}, invalidState("the cluster already holds %d data objects, the most it may", len(d.DataObjects))
	}
	if c.Bounded {
		if err := d.dataObjectRoom(c.Object.Creator, len(c.Object.Value)); err != nil {
			return nil, Event{}, err
		}
	}
	o := c.Object.Clone()
	o.CreatedAt = utc(o.CreatedAt)
	d.DataObjects[o.ID] = &o
	return o.Clone(), Event{Type: TypeCreateDataObject}, nil
}

func (c *DeleteDataObject) apply(d *Data) (any, Event, error) {
	if _, ok := d.DataObjects[c.ID]; !ok {
		return nil, Event{}, notFound("data object %q", c.ID)
	}
	delete(d.DataObjects, c.ID)
	return nil, Event{Type: TypeDeleteDataObject}, nil
}

// DataObjects returns every data object, ordered by id.
func (s *State) DataObjects() []DataObject {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]DataObject, 0, len(s.data.DataObjects))
	for _, o := range s.data.DataObjects {
		out = append(out, o.Clone())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// DataObjectRoom refuses, with ErrInvalidState, a new data object of
// valueLen bytes made by creator that the apply would refuse for the
// cluster's or the creator's bounds on this node's state. It is the
// apply's own check; the apply checks again.
func (s *State) DataObjectRoom(creator string, valueLen int) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.data.dataObjectRoom(creator, valueLen)
}

// dataObjectRoom refuses a new data object past MaxDataObjects,
// MaxDataObjectBytes, or creator's share of either. It scans every data
// object: there are at most MaxDataObjects.
func (d *Data) dataObjectRoom(creator string, valueLen int) error {
	var allBytes, mine, mineBytes int
	for _, o := range d.DataObjects {
		if o.Creator == creator {
			mine++
			mineBytes += len(o.Value)
		}
		allBytes += len(o.Value)
	}
	switch {
	case len(d.DataObjects) >= MaxDataObjects:
		return invalidState("the cluster already holds %d data objects, the most it may", len(d.DataObjects))
	case mine >= MaxDataObjectsPerCreator:
		return invalidState("%s already made %d data objects, the most one principal may; delete some first", creator, mine)
	case mineBytes+valueLen > MaxDataObjectBytesPerCreator:
		return invalidState("the values of %s's data objects would take %d bytes, more than the %d one principal may; delete some first",
			creator, mineBytes+valueLen, MaxDataObjectBytesPerCreator)
	case allBytes+valueLen > MaxDataObjectBytes:
		return invalidState("the data objects' values would take %d bytes, more than the %d the cluster keeps (%d objects)",
			allBytes+valueLen, MaxDataObjectBytes, len(d.DataObjects))
	}
	return nil
}

// checkDataObjects checks the data objects of a restored snapshot.
func checkDataObjects(d *Data) error {
	if len(d.DataObjects) > MaxDataObjects {
		return invalidCommand("snapshot holds %d data objects, more than %d", len(d.DataObjects), MaxDataObjects)
	}
	for id, o := range d.DataObjects {
		if o == nil || o.ID != id {
			return invalidCommand("data object entry %q does not hold object %q", id, id)
		}
		if err := o.check(); err != nil {
			return err
		}
		o.CreatedAt = utc(o.CreatedAt)
	}
	return nil
}

// digestDataObjects adds the data objects to the state digest. It writes
// nothing when there are none, so the digest of a cluster that never made
// one is what it was before data objects existed.
func (e *digestEncoder) dataObjects(d *Data) {
	if len(d.DataObjects) == 0 {
		return
	}
	e.str("data_objects")
	e.uint(uint64(len(d.DataObjects)))
	for _, id := range sortedKeys(d.DataObjects) {
		o := d.DataObjects[id]
		e.str(id)
		e.str(o.Label)
		e.str(o.Application)
		e.bytes(o.ObjectID)
		e.bytes(o.Value)
		e.bool(o.Private)
		e.str(o.Creator)
		e.time(o.CreatedAt)
	}
}
