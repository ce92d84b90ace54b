package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// recordFrom fills every field of a Record from the fuzzer's inputs.
func recordFrom(s1, s2, s3 string, n uint64, t int64) *Record {
	r := &Record{Seq: n, Time: time.Unix(0, t).UTC(), Node: s1, Front: s2, RequestID: s3, Peer: s1 + s2,
		Principal: s2, Role: s3, Operation: s1, KeyID: s3 + s1, KeyRef: s2 + s3, Decision: s1, Reason: s2,
		Result: s3, Code: s1, Intent: n / 3, Segment: s2, Prev: s3, ContextOmitted: s1 + s3}
	if n%2 == 0 {
		r.KeyIDs = []string{s1, s2, s3}
	}
	if n%3 != 0 {
		r.EncryptionContext = map[string]string{s1: s2, s2: s3, s3: s1, "": s1 + s2}
	}
	if n%5 == 0 {
		r.Peer, r.Role, r.KeyID, r.KeyRef, r.Reason, r.Segment, r.ContextOmitted, r.Intent = "", "", "", "", "", "", "", 0
	}
	if n%7 == 0 {
		r.KeyIDs, r.EncryptionContext = []string{}, map[string]string{}
	}
	return r
}

// FuzzAppendRecordSameAsMarshal: the line encoder writes exactly what
// encoding/json's Marshal writes for the same record, whatever its
// strings hold (escapes, HTML characters, invalid UTF-8, U+2028) and
// whichever optional members are empty.
func FuzzAppendRecordSameAsMarshal(f *testing.F) {
	f.Add("node1", "grpc", "r1", uint64(7), time.Now().UnixNano())
	f.Add("<a>&\"\\", "\x00\x01\b\f\n\r\t\x1f\x7f", "\u2028\u2029\xff\xfe é 漢", uint64(10), int64(0))
	f.Add("\xed\xa0\x80", "a\xc3", "\U0001F600", uint64(1), int64(-1))
	f.Fuzz(func(t *testing.T, s1, s2, s3 string, n uint64, ts int64) {
		r := recordFrom(s1, s2, s3, n, ts)
		want, err := json.Marshal(r)
		got, ok := appendRecord(nil, r)
		if !ok {
			if err == nil {
				t.Fatalf("appendRecord refused a record Marshal encodes: %s", want)
			}
			return
		}
		if err != nil {
			t.Fatalf("Marshal refused (%v) a record appendRecord encoded: %s", err, got)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("appendRecord and Marshal differ:\n got %s\nwant %s", got, want)
		}
	})
}

// TestEncodeVerifies: lines of records with awkward strings verify and
// read back as written.
func TestEncodeVerifies(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, Options{})
	awkward := []string{"<script>&amp;</script>", "tab\there\nnewline", "\xff\xfe", "\u2028", strings.Repeat("é", 300)}
	for i, s := range awkward {
		r := rec(i)
		r.Principal, r.EncryptionContext = s, map[string]string{"k" + s: s}
		if _, err := l.Append(r, false); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := Verify(bytes.NewReader(buf.Bytes()))
	if err != nil || rep.Lines != len(awkward) {
		t.Fatalf("%+v %v", rep, err)
	}
	for i, line := range bytes.Split(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte("\n")) {
		r, _, err := parseLine(line)
		if err != nil {
			t.Fatal(err)
		}
		if want := string([]rune(awkward[i])); r.Principal != want && !strings.Contains(r.Principal, "truncated") {
			t.Errorf("line %d: principal %q, want %q", i+1, r.Principal, want)
		}
	}
}

// TestEncodeRefusesOutOfRangeTime: a time JSON cannot carry (as
// encoding/json refuses it) is an error, never a line.
func TestEncodeRefusesOutOfRangeTime(t *testing.T) {
	r := rec(1)
	r.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
	if line, _, err := encode(r); err == nil {
		t.Fatalf("encoded %s", line)
	}
	var buf bytes.Buffer
	l := New(&buf, Options{})
	if _, err := l.Append(r, false); err == nil || buf.Len() != 0 {
		t.Fatalf("append: %v, wrote %q", err, buf.Bytes())
	}
}
