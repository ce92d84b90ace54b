package broker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hsmbroker/hsmbroker/cluster"
	"google.golang.org/grpc/codes"
)

// The attribute rules of the KMIP core, without an HSM: what each
// operation does to each attribute a client may change, and how it
// refuses.
func TestKMIPAttributeEdits(t *testing.T) {
	day := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	base := func() cluster.KMIPObject {
		return cluster.KMIPObject{State: cluster.KMIPPreActive, Names: []string{"a", "b"}, Groups: []string{"g"},
			UsageMask: 0x0C, Custom: map[string]string{"x-owner": "dba"}}
	}
	text := func(s string) KMIPAttributeValue { return KMIPAttributeValue{Text: s} }
	tests := []struct {
		name     string
		state    uint32
		edit     KMIPAttributeEdit
		value    KMIPAttributeValue
		current  *KMIPAttributeValue
		check    func(o cluster.KMIPObject) bool
		wantCode codes.Code
		wantErr  error
	}{
		{name: "add name", edit: KMIPAttributeEdit{Op: KMIPAddAttribute, Name: "Name"}, value: text("c"),
			check: func(o cluster.KMIPObject) bool { return slices.Equal(o.Names, []string{"a", "b", "c"}) }},
		{name: "set group", edit: KMIPAttributeEdit{Op: KMIPSetAttribute, Name: "Object Group"}, value: text("h"),
			check: func(o cluster.KMIPObject) bool { return slices.Equal(o.Groups, []string{"h"}) }},
		{name: "modify name by index", edit: KMIPAttributeEdit{Op: KMIPModifyAttribute, Name: "Name", Index: 1}, value: text("z"),
			check: func(o cluster.KMIPObject) bool { return slices.Equal(o.Names, []string{"a", "z"}) }},
		{name: "modify name by current value", edit: KMIPAttributeEdit{Op: KMIPModifyAttribute, Name: "Name", Index: 1}, value: text("z"),
			current: &KMIPAttributeValue{Text: "a"},
			check:   func(o cluster.KMIPObject) bool { return slices.Equal(o.Names, []string{"z", "b"}) }},
		{name: "modify name, current value absent", edit: KMIPAttributeEdit{Op: KMIPModifyAttribute, Name: "Name"}, value: text("z"),
			current: &KMIPAttributeValue{Text: "nope"}, wantCode: codes.NotFound},
		{name: "modify name, index out of range", edit: KMIPAttributeEdit{Op: KMIPModifyAttribute, Name: "Name", Index: 2}, value: text("z"),
			wantCode: codes.NotFound},
		{name: "delete name", edit: KMIPAttributeEdit{Op: KMIPDeleteAttribute, Name: "Name", Index: 0},
			check: func(o cluster.KMIPObject) bool { return slices.Equal(o.Names, []string{"b"}) }},
		{name: "delete group, index out of range", edit: KMIPAttributeEdit{Op: KMIPDeleteAttribute, Name: "Object Group", Index: 5},
			wantCode: codes.NotFound},
		{name: "add existing custom", edit: KMIPAttributeEdit{Op: KMIPAddAttribute, Name: "x-owner"}, value: text("ops"),
			wantCode: codes.AlreadyExists, wantErr: ErrKMIPAttributeExists},
		{name: "add new custom", edit: KMIPAttributeEdit{Op: KMIPAddAttribute, Name: "x-site"}, value: text("fra"),
			check: func(o cluster.KMIPObject) bool { return o.Custom["x-site"] == "fra" && o.Custom["x-owner"] == "dba" }},
		{name: "modify custom", edit: KMIPAttributeEdit{Op: KMIPModifyAttribute, Name: "x-owner"}, value: text("ops"),
			check: func(o cluster.KMIPObject) bool { return o.Custom["x-owner"] == "ops" }},
		{name: "delete custom", edit: KMIPAttributeEdit{Op: KMIPDeleteAttribute, Name: "x-owner"},
			check: func(o cluster.KMIPObject) bool { _, ok := o.Custom["x-owner"]; return !ok }},
		{name: "delete missing custom", edit: KMIPAttributeEdit{Op: KMIPDeleteAttribute, Name: "y-none"}, wantCode: codes.NotFound},
		{name: "set usage mask", edit: KMIPAttributeEdit{Op: KMIPModifyAttribute, Name: "Cryptographic Usage Mask"},
			value: KMIPAttributeValue{UsageMask: 0x80}, check: func(o cluster.KMIPObject) bool { return o.UsageMask == 0x80 }},
		{name: "delete usage mask", edit: KMIPAttributeEdit{Op: KMIPDeleteAttribute, Name: "Cryptographic Usage Mask"},
			check: func(o cluster.KMIPObject) bool { return o.UsageMask == 0 }},
		{name: "activation date while Pre-Active", edit: KMIPAttributeEdit{Op: KMIPAddAttribute, Name: "Activation Date"},
			value: KMIPAttributeValue{Date: day}, check: func(o cluster.KMIPObject) bool { return o.ActivationDate.Equal(day) }},
		{name: "activation date while Active", state: cluster.KMIPActive, edit: KMIPAttributeEdit{Op: KMIPAddAttribute, Name: "Activation Date"},
			value: KMIPAttributeValue{Date: day}, wantCode: codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base()
			if tt.state != 0 {
				o.State = tt.state
			}
			err := editKMIPAttribute(&o, tt.edit, tt.value, tt.current, day.Add(-24*time.Hour)) // the date is still to come
			code, _, _ := Classify(err)
			if code != tt.wantCode {
				t.Fatalf("error %v (%s), want %s", err, code, tt.wantCode)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if err == nil && !tt.check(o) {
				t.Fatalf("object after the edit: %+v", o)
			}
		})
	}
}

// Only Name, Object Group, Cryptographic Usage Mask, Activation Date and
// custom attributes are the client's to change.
func TestKMIPClientAttributes(t *testing.T) {
	for name, want := range map[string]bool{
		"Name": true, "Object Group": true, "Cryptographic Usage Mask": true, "Activation Date": true,
		"x-owner": true, "y-server": true, "State": false, "Unique Identifier": false, "Cryptographic Length": false,
		"Extractable": false, "Link": false, "z-other": false, "": false,
	} {
		if got := kmipClientAttribute(name); got != want {
			t.Errorf("kmipClientAttribute(%q) = %v, want %v", name, got, want)
		}
	}
}

// A KMIPCreateObject or KMIPCreateKeyPair refused when applied for the
// cluster's limit on objects is told as that limit (ResourceExhausted,
// ErrKMIPObjectLimit), not as a key state problem.
func TestKMIPCreateFailedLimit(t *testing.T) {
	err := kmipCreateFailed(fmt.Errorf("%w: the cluster holds 100000 KMIP objects, the limit", cluster.ErrInvalidState))
	code, exc, msg := Classify(err)
	if !errors.Is(err, ErrKMIPObjectLimit) || code != codes.ResourceExhausted || exc != ExcLimitExceeded || !strings.Contains(msg, "100000") {
		t.Fatalf("kmipCreateFailed: %v %s %q (%v)", code, exc, msg, err)
	}
	other := fmt.Errorf("%w: kmip object \"x\"", cluster.ErrAlreadyExists)
	if got := kmipCreateFailed(other); got != other {
		t.Fatalf("kmipCreateFailed changed %v into %v", other, got)
	}
}
