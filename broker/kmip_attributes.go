package broker

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/hsmbroker/hsmbroker/cluster"
	"google.golang.org/grpc/codes"
)

// KMIPAttributes are the attributes a client gives an object it creates or
// registers.
type KMIPAttributes struct {
	Names          []string
	Groups         []string
	Custom         map[string]string // custom attributes by name (KMIPCustomAttribute)
	Algorithm      uint32            // KMIP Cryptographic Algorithm; AES is 3
	Length         int32             // bits
	UsageMask      int32
	SecretDataType uint32
	// NotExtractable marks an object whose material Get never returns
	// (the client set Extractable false or Sensitive true).
	NotExtractable bool
	// ActivationDate, when set, is recorded; one that is not in the future
	// makes the new object Active at once (activateBy).
	ActivationDate time.Time
}

// checkKMIPAttributes checks the attributes of an object being made (was
// 0) or changed (was: what its attributes took before the change, for
// MaxKMIPAttributeBytes).
func checkKMIPAttributes(a KMIPAttributes, was int) error {
	if len(a.Names) > cluster.MaxKMIPNames || len(a.Groups) > cluster.MaxKMIPGroups || len(a.Custom) > cluster.MaxKMIPCustom {
		return kmipInvalid("an object has at most %d names, %d object groups and %d custom attributes", cluster.MaxKMIPNames, cluster.MaxKMIPGroups, cluster.MaxKMIPCustom)
	}
	if err := checkKMIPAttributeBytes(a, was); err != nil {
		return err
	}
	if !a.ActivationDate.IsZero() {
		return checkKMIPDate("Activation Date", a.ActivationDate)
	}
	return nil
}

// MaxKMIPAttributeBytes bounds the names, object groups and custom
// attributes of one KMIP object together (their bytes, custom attributes'
// names and values both), on top of the bound on each: every one at its
// own bound would be some 200 KB an object, 20 GB in the replicated state
// at MaxKMIPObjects, and every change of such an object would write all of
// it to every node's Raft log. It is checked where an object is made or
// changed, before the change is proposed, not where commands are applied,
// so that logs and snapshots written before it was set stay valid.
const MaxKMIPAttributeBytes = 16 << 10

// kmipAttributeBytes is what MaxKMIPAttributeBytes counts of a.
func kmipAttributeBytes(a KMIPAttributes) int {
	n := 0
	for _, s := range a.Names {
		n += len(s)
	}
	for _, s := range a.Groups {
		n += len(s)
	}
	for k, v := range a.Custom {
		n += len(k) + len(v)
	}
	return n
}

// checkKMIPAttributeBytes refuses attributes over MaxKMIPAttributeBytes,
// unless they are no larger than was of the object before the change (an
// object stored before the bound keeps its attributes, and may shrink).
func checkKMIPAttributeBytes(a KMIPAttributes, was int) error {
	if n := kmipAttributeBytes(a); n > MaxKMIPAttributeBytes && n > was {
		return kmipInvalid("an object's names, object groups and custom attributes (names and values) take at most %d bytes together; these take %d",
			MaxKMIPAttributeBytes, n)
	}
	return nil
}

// activateBy gives a Pre-Active object the Activation Date date (none when
// zero): KMIP's state model makes an object Active once its Activation
// Date is reached, so a date that is not after now activates it in the
// same change; a later one is only recorded.
func activateBy(o *cluster.KMIPObject, date, now time.Time) {
	if date.IsZero() {
		return
	}
	o.ActivationDate = date.UTC()
	if o.ActivationDue(now) {
		o.State = cluster.KMIPActive
	}
}

// KMIPCustomAttribute reports whether name is a KMIP 1.x custom attribute:
// "x-..." (the client's) or "y-..." (the server's).
func KMIPCustomAttribute(name string) bool {
	return strings.HasPrefix(name, "x-") || strings.HasPrefix(name, "y-")
}

// KMIPAttributeOp is what EditAttribute does to an attribute.
type KMIPAttributeOp uint8

// The attribute operations.
const (
	KMIPAddAttribute    KMIPAttributeOp = iota + 1 // adds an instance; a custom attribute must not exist yet
	KMIPModifyAttribute                            // changes one instance (a custom attribute is set)
	KMIPSetAttribute                               // replaces every instance (KMIP 2.0)
	KMIPDeleteAttribute                            // removes one instance
)

// KMIPAttributeValue is the value of an attribute a client may change;
// the field its attribute uses is set.
type KMIPAttributeValue struct {
	Text      string    // Name, Object Group and custom attributes
	UsageMask int32     // Cryptographic Usage Mask
	Date      time.Time // Activation Date
}

// KMIPAttributeEdit is one Add, Modify, Set or Delete Attribute request.
type KMIPAttributeEdit struct {
	ID string
	Op KMIPAttributeOp
	// Name is the attribute's KMIP 1.x name. A client may change Name,
	// Object Group, Cryptographic Usage Mask, Activation Date (while the
	// object is Pre-Active) and custom attributes; nothing else.
	Name string
	// Index picks the instance of a Name or Object Group that Modify and
	// Delete change.
	Index int
	// Decode returns the values of the request, decoded by the front: the
	// new value (Add, Modify, Set) and, for a Modify that names the
	// instance it changes by its value (KMIP 2.0's Current Attribute),
	// that value, else nil. EditAttribute calls it once, after it has
	// found that a client may change the attribute, so that a request to
	// change any other attribute is refused as such whatever value it
	// carries. Delete carries no values and does not call it.
	Decode func() (value KMIPAttributeValue, current *KMIPAttributeValue, err error)
}

// ErrKMIPAttributeExists is the cause of the error Add Attribute gets for
// a custom attribute the object already has (KMIP's Illegal Operation).
var ErrKMIPAttributeExists = errors.New("kmip: the attribute exists")

// kmipClientAttribute reports whether a client may change the attribute
// named name.
func kmipClientAttribute(name string) bool {
	switch name {
	case "Name", "Object Group", "Cryptographic Usage Mask", "Activation Date":
		return true
	}
	return KMIPCustomAttribute(name)
}

// EditAttribute applies one attribute operation to an object and returns
// the object as stored, without its material.
func (c *KMIPObjects) EditAttribute(ctx context.Context, req KMIPAttributeEdit) (cluster.KMIPObject, error) {
	if req.Op < KMIPAddAttribute || req.Op > KMIPDeleteAttribute {
		return cluster.KMIPObject{}, kmipInvalid("unknown attribute operation %d", req.Op)
	}
	if !kmipClientAttribute(req.Name) {
		return cluster.KMIPObject{}, newError(codes.PermissionDenied, ExcAccessDenied, "attribute %s cannot be changed by a client", req.Name)
	}
	var value KMIPAttributeValue
	var current *KMIPAttributeValue
	if req.Decode != nil && req.Op != KMIPDeleteAttribute {
		var err error
		if value, current, err = req.Decode(); err != nil {
			return cluster.KMIPObject{}, err
		}
		if req.Name == "Activation Date" {
			if err := checkKMIPDate("Activation Date", value.Date); err != nil {
				return cluster.KMIPObject{}, err
			}
		}
	}
	now := c.s.now()
	return c.update(ctx, req.ID, func(o *cluster.KMIPObject) error {
		return editKMIPAttribute(o, req, value, current, now)
	})
}

// editKMIPAttribute applies one attribute change to o, made at now.
func editKMIPAttribute(o *cluster.KMIPObject, e KMIPAttributeEdit, value KMIPAttributeValue, current *KMIPAttributeValue, now time.Time) error {
	noInstance := func() error { return errNotFound("no such attribute instance") }
	multi := func(list *[]string) error {
		switch e.Op {
		case KMIPAddAttribute:
			*list = append(*list, value.Text)
		case KMIPSetAttribute:
			*list = []string{value.Text}
		case KMIPModifyAttribute:
			i := e.Index
			if current != nil {
				i = -1
				for j, s := range *list {
					if current.Text != "" && s == current.Text {
						i = j
					}
				}
			}
			if i < 0 || i >= len(*list) {
				return noInstance()
			}
			(*list)[i] = value.Text
		case KMIPDeleteAttribute:
			i := e.Index
			if i < 0 || i >= len(*list) {
				return noInstance()
			}
			*list = append((*list)[:i], (*list)[i+1:]...)
		}
		return nil
	}
	switch {
	case KMIPCustomAttribute(e.Name):
		if e.Op == KMIPDeleteAttribute {
			if _, ok := o.Custom[e.Name]; !ok {
				return errNotFound("no attribute %s", e.Name)
			}
			delete(o.Custom, e.Name)
			return nil
		}
		if _, ok := o.Custom[e.Name]; ok && e.Op == KMIPAddAttribute {
			return &Error{Code: codes.AlreadyExists, Exception: ExcAlreadyExists, Message: "custom attribute " + e.Name + " exists; modify it", Err: ErrKMIPAttributeExists}
		}
		if o.Custom == nil {
			o.Custom = map[string]string{}
		}
		o.Custom[e.Name] = value.Text
	case e.Name == "Name":
		return multi(&o.Names)
	case e.Name == "Object Group":
		return multi(&o.Groups)
	case e.Name == "Cryptographic Usage Mask":
		o.UsageMask = value.UsageMask // zero for Delete
	case e.Name == "Activation Date":
		if o.State != cluster.KMIPPreActive {
			return kmipWrongState("Activation Date can change only while the object is Pre-Active; KMIP object %s is %s", o.ID, kmipStateName(o.State))
		}
		o.ActivationDate = time.Time{} // Delete
		activateBy(o, value.Date, now)
	}
	return nil
}
