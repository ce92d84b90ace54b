package cluster

import (
	"bytes"
	"errors"
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
	full := NewData()
	full.DataObjects = map[string]*DataObject{}
	for i := 0; i < MaxDataObjects; i++ {
		o := testDataObject("")
		o.ID = hexID(i)
		full.DataObjects[o.ID] = &o
	}
	if _, _, err := (&CreateDataObject{Object: testDataObject(id)}).apply(full); !errors.Is(err, ErrInvalidState) {
		t.Fatalf("object past the bound: %v", err)
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
