package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func testDataObject(id string) DataObject {
	return DataObject{ID: id, Label: "ORACLE.SECURITY.KM.ENCRYPTION.4142", Application: "oracle", Value: []byte{1, 2, 3}, Creator: "app", CreatedAt: t0}
}

func TestDataObjects(t *testing.T) {
	d := NewData()
	before := d.Digest()
	id := "00112233445566778899aabbccddeeff"
	if _, _, err := (&CreateDataObject{Object: testDataObject(id)}).apply(d); err != nil {
		t.Fatal(err)
	}
	if d.Digest() == before {
		t.Fatal("the digest does not see a data object")
	}
	if _, _, err := (&CreateDataObject{Object: testDataObject(id)}).apply(d); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("same id twice: %v", err)
	}
	c := d.Clone()
	c.DataObjects[id].Value[0] = 9
	if d.DataObjects[id].Value[0] != 1 {
		t.Fatal("Clone shares a data object's value")
	}
	for _, bad := range []DataObject{
		{ID: "XYZ", CreatedAt: t0},
		{ID: id, Value: make([]byte, MaxDataObjectValue+1), CreatedAt: t0},
		{ID: id, Label: string(bytes.Repeat([]byte("a"), MaxDataObjectField+1)), CreatedAt: t0},
	} {
		if _, err := EncodeCommand(&CreateDataObject{Object: bad}); !errors.Is(err, ErrInvalidCommand) {
			t.Fatalf("bad object accepted: %v", err)
		}
	}
	if _, _, err := (&DeleteDataObject{ID: id}).apply(d); err != nil {
		t.Fatal(err)
	}
	if _, _, err := (&DeleteDataObject{ID: id}).apply(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if d.Digest() != before {
		t.Fatal("an empty set of data objects changes the digest")
	}
	// Each bound, alone: the cluster's count (every object another
	// creator's), one creator's count, one creator's bytes, all bytes.
	fill := func(n int, creator func(i int) string, value int) *Data {
		d := NewData()
		d.DataObjects = map[string]*DataObject{}
		for i := range n {
			o := testDataObject(hexID(i + 1))
			o.Creator = creator(i)
			o.Value = make([]byte, value)
			d.DataObjects[o.ID] = &o
		}
		return d
	}
	others := func(i int) string { return fmt.Sprint("other", i%8) }
	mine := func(int) string { return "app" }
	big := MaxDataObjectValue
	for _, tc := range []struct {
		name string
		d    *Data
		want string
		// emptyFits: the bound is on bytes, which are exactly at it, so
		// an object with no value still fits.
		emptyFits bool
	}{
		{"cluster count", fill(MaxDataObjects, others, 0), "the most it may", false},
		{"creator count", fill(MaxDataObjectsPerCreator, mine, 0), "app already made 256 data objects", false},
		{"creator bytes", fill(MaxDataObjectBytesPerCreator/big, mine, big), "app's data objects would take", true},
		{"all bytes", fill(MaxDataObjectBytes/big, others, big), "the cluster keeps", true},
	} {
		if err := tc.d.dataObjectRoom("app", 0); (err == nil) != tc.emptyFits {
			t.Fatalf("%s: an object with no value: %v", tc.name, err)
		}
		_, _, err := (&CreateDataObject{Object: testDataObject(id), Bounded: true}).apply(tc.d)
		if !errors.Is(err, ErrInvalidState) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: object past the bound: %v", tc.name, err)
		}
		// A log entry from before the apply held creators to their
		// bounds replays as it was applied then.
		old := tc.d.Clone()
		_, _, err = (&CreateDataObject{Object: testDataObject(id)}).apply(old)
		if tc.name == "cluster count" {
			if !errors.Is(err, ErrInvalidState) {
				t.Fatalf("%s: an unbounded create past the cluster's count: %v", tc.name, err)
			}
		} else if err != nil {
			t.Fatalf("%s: an unbounded create replayed differently: %v", tc.name, err)
		}
		delete(tc.d.DataObjects, hexID(1))
		if _, _, err := (&CreateDataObject{Object: testDataObject(id), Bounded: true}).apply(tc.d); err != nil {
			t.Fatalf("%s: object within the bound after a delete: %v", tc.name, err)
		}
	}
}

func hexID(i int) string {
	const digits = "0123456789abcdef"
	b := []byte("00000000000000000000000000000000")
	for p := len(b) - 1; i > 0; p-- {
		b[p] = digits[i%16]
		i /= 16
	}
	return string(b)
}
