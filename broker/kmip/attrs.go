package kmip

import (
	"fmt"
	"slices"
	"time"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
	"github.com/hsmbroker/hsmbroker/cluster"
	"github.com/hsmbroker/hsmbroker/keys"
)

// attrDef is one attribute this server knows: its KMIP 1.x name, its tag
// (the KMIP 2.0 form) and the type of its value.
type attrDef struct {
	name     string
	tag      ttlv.Tag
	typ      ttlv.Type
	settable bool // a client may set it at Create/Register or with the attribute operations
}

var attrDefs = []attrDef{
	{"Unique Identifier", tagUniqueIdentifier, ttlv.TypeTextString, false},
	{"Name", tagName, ttlv.TypeStructure, true},
	{"Object Type", tagObjectType, ttlv.TypeEnumeration, false},
	{"Cryptographic Algorithm", tagCryptographicAlgorithm, ttlv.TypeEnumeration, true},
	{"Cryptographic Length", tagCryptographicLength, ttlv.TypeInteger, true},
	{"Cryptographic Usage Mask", tagCryptographicUsageMask, ttlv.TypeInteger, true},
	{"State", tagState, ttlv.TypeEnumeration, false},
	{"Object Group", tagObjectGroup, ttlv.TypeTextString, true},
	{"Initial Date", tagInitialDate, ttlv.TypeDateTime, false},
	{"Activation Date", tagActivationDate, ttlv.TypeDateTime, true},
	{"Deactivation Date", tagDeactivationDate, ttlv.TypeDateTime, false},
	{"Compromise Date", tagCompromiseDate, ttlv.TypeDateTime, false},
	{"Last Change Date", tagLastChangeDate, ttlv.TypeDateTime, false},
	{"Original Creation Date", tagOriginalCreationDate, ttlv.TypeDateTime, false},
	{"Revocation Reason", tagRevocationReason, ttlv.TypeStructure, false},
	{"Extractable", tagExtractable, ttlv.TypeBoolean, true},
	{"Sensitive", tagSensitive, ttlv.TypeBoolean, true},
	// KMIP 1.x clients (PyKMIP among them) may send an Operation Policy
	// Name; access here is the wrapping key's policy, so it is accepted
	// and not kept.
	{"Operation Policy Name", tagOperationPolicyName, ttlv.TypeTextString, true},
	// The halves of a key pair link to each other.
	{"Link", tagLink, ttlv.TypeStructure, false},
}

func attrByName(name string) (attrDef, bool) {
	for _, d := range attrDefs {
		if d.name == name {
			return d, true
		}
	}
	return attrDef{}, false
}

func attrByTag(tag ttlv.Tag) (attrDef, bool) {
	for _, d := range attrDefs {
		if d.tag == tag {
			return d, true
		}
	}
	return attrDef{}, false
}

// attrValue is one decoded attribute: its name and its value item.
type attrValue struct {
	name  string
	index int // Attribute Index (1.x), 0 when absent
	value ttlv.Item
}

// decodeAttribute reads a 1.x Attribute structure.
func decodeAttribute(it ttlv.Item) (attrValue, error) {
	if it.Type != ttlv.TypeStructure {
		return attrValue{}, invalidMessage("Attribute must be a structure")
	}
	n, ok := it.Child(tagAttributeName)
	if !ok || n.Type != ttlv.TypeTextString {
		return attrValue{}, invalidMessage("Attribute has no Attribute Name")
	}
	av := attrValue{name: n.Text()}
	if idx, ok := it.Child(tagAttributeIndex); ok {
		if idx.Type != ttlv.TypeInteger || idx.Int < 0 {
			return attrValue{}, invalidField("Attribute Index must be a non-negative Integer")
		}
		av.index = int(idx.Int)
	}
	v, ok := it.Child(tagAttributeValue)
	if !ok {
		return av, nil // Delete Attribute and Get name lists carry none
	}
	av.value = v
	return av, nil
}

// decodeAttributes reads the attributes of a request in either form: 1.x
// Attribute structures (bare or in a Template Attribute) and the 2.0
// Attributes structure, whose children are the attributes themselves.
func decodeAttributes(payload ttlv.Item) ([]attrValue, error) {
	var out []attrValue
	add := func(items []ttlv.Item) error {
		for _, a := range items {
			av, err := decodeAttribute(a)
			if err != nil {
				return err
			}
			if av.value.Type == 0 {
				return invalidMessage("Attribute %q has no Attribute Value", av.name)
			}
			out = append(out, av)
		}
		return nil
	}
	if err := add(payload.ChildrenOf(tagAttribute)); err != nil {
		return nil, err
	}
	for _, ta := range append(payload.ChildrenOf(tagTemplateAttribute), payload.ChildrenOf(0x42001F)...) { // Template Attribute, Common Template Attribute
		if err := add(ta.ChildrenOf(tagAttribute)); err != nil {
			return nil, err
		}
		if len(ta.ChildrenOf(tagName)) > 0 {
			return nil, featureNotSupported("templates by name are not supported")
		}
	}
	for _, as := range payload.ChildrenOf(tagAttributes) {
		for _, c := range as.Children {
			av, err := attr20(c)
			if err != nil {
				return nil, err
			}
			out = append(out, av)
		}
	}
	return out, nil
}

// attr20 reads one attribute of a 2.0 Attributes structure.
func attr20(c ttlv.Item) (attrValue, error) {
	d, ok := attrByTag(c.Tag)
	if !ok {
		return attrValue{}, invalidField("attribute tag 0x%06x is not supported", uint32(c.Tag))
	}
	return attrValue{name: d.name, value: c}, nil
}

// attrSet is what a request's attributes say.
type attrSet struct {
	names, groups  []string
	custom         map[string]string
	algorithm      uint32
	length         int32
	usageMask      int32
	objectType     uint32
	state          uint32
	notExtractable bool
	activation     time.Time
}

// first is the text value one decoded attribute gave: its Name, its
// Object Group, or the value of the custom attribute custom.
func (s attrSet) first(custom string) string {
	switch {
	case len(s.names) > 0:
		return s.names[0]
	case len(s.groups) > 0:
		return s.groups[0]
	}
	return s.custom[custom]
}

// apply reads one attribute value into s. settableOnly refuses the
// attributes only the server sets.
func (s *attrSet) apply(av attrValue, settableOnly bool) error {
	if broker.KMIPCustomAttribute(av.name) {
		if av.value.Type != ttlv.TypeTextString {
			return invalidField("custom attribute %q: only Text String values are supported", av.name)
		}
		if s.custom == nil {
			s.custom = map[string]string{}
		}
		s.custom[av.name] = av.value.Text()
		return nil
	}
	d, ok := attrByName(av.name)
	if !ok {
		return invalidField("attribute %q is not supported", av.name)
	}
	if settableOnly && !d.settable && d.name != "Object Type" && d.name != "State" {
		return invalidField("attribute %q is set by the server", av.name)
	}
	v := av.value
	if v.Type != d.typ {
		return invalidField("attribute %q must be a %s, got %s", av.name, d.typ, v.Type)
	}
	switch d.tag {
	case tagName:
		nv, ok := v.Child(tagNameValue)
		if !ok || nv.Type != ttlv.TypeTextString || nv.Text() == "" {
			return invalidField("Name needs a non-empty Name Value")
		}
		if nt, ok := v.Child(tagNameType); ok && (nt.Type != ttlv.TypeEnumeration || nt.Int != int64(nameTypeText) && nt.Int != 2) {
			return invalidField("Name Type must be Uninterpreted Text String or URI")
		}
		if !slices.Contains(s.names, nv.Text()) {
			s.names = append(s.names, nv.Text())
		}
	case tagObjectGroup:
		if v.Text() == "" {
			return invalidField("Object Group must not be empty")
		}
		if !slices.Contains(s.groups, v.Text()) {
			s.groups = append(s.groups, v.Text())
		}
	case tagCryptographicAlgorithm:
		s.algorithm = uint32(v.Int)
	case tagCryptographicLength:
		if v.Int <= 0 || v.Int > 1<<16 {
			return invalidField("Cryptographic Length %d is out of range", v.Int)
		}
		s.length = int32(v.Int)
	case tagCryptographicUsageMask:
		s.usageMask = int32(v.Int)
	case tagObjectType:
		s.objectType = uint32(v.Int)
	case tagState:
		if v.Int < 1 || v.Int > 6 {
			return invalidField("State %d is not a KMIP state", v.Int)
		}
		s.state = uint32(v.Int)
	case tagExtractable:
		if !v.Bool {
			s.notExtractable = true
		}
	case tagSensitive:
		if v.Bool {
			s.notExtractable = true
		}
	case tagActivationDate:
		s.activation = v.Time()
	case tagOperationPolicyName:
	default:
		return invalidField("attribute %q cannot be used here", av.name)
	}
	return nil
}

// objectAttrs lists the attributes an object has, as values.
func objectAttrs(o cluster.KMIPObject) []attrValue {
	var out []attrValue
	add := func(name string, v ttlv.Item) { out = append(out, attrValue{name: name, value: v}) }
	av := ttlv.Tag(tagAttributeValue)
	add("Unique Identifier", ttlv.Text(av, o.ID))
	for _, n := range o.Names {
		add("Name", ttlv.Struct(av, ttlv.Text(tagNameValue, n), ttlv.Enum(tagNameType, nameTypeText)))
	}
	add("Object Type", ttlv.Enum(av, o.ObjectType))
	if o.Algorithm != 0 {
		add("Cryptographic Algorithm", ttlv.Enum(av, o.Algorithm))
	}
	if o.Length != 0 {
		add("Cryptographic Length", ttlv.Int(av, o.Length))
	}
	if o.UsageMask != 0 {
		add("Cryptographic Usage Mask", ttlv.Int(av, o.UsageMask))
	}
	add("State", ttlv.Enum(av, o.State))
	for _, g := range o.Groups {
		add("Object Group", ttlv.Text(av, g))
	}
	add("Initial Date", ttlv.DateTime(av, o.CreatedAt))
	for _, d := range []struct {
		name string
		t    time.Time
	}{{"Activation Date", o.ActivationDate}, {"Deactivation Date", o.DeactivationDate}, {"Compromise Date", o.CompromiseDate}, {"Last Change Date", o.LastChange}} {
		if !d.t.IsZero() {
			add(d.name, ttlv.DateTime(av, d.t))
		}
	}
	if o.RevocationReason != 0 {
		r := ttlv.Struct(av, ttlv.Enum(tagRevocationReasonCode, o.RevocationReason))
		if o.RevocationMessage != "" {
			r.Children = append(r.Children, ttlv.Text(tagRevocationMessage, o.RevocationMessage))
		}
		add("Revocation Reason", r)
	}
	if o.LinkedID != "" {
		lt := linkPublicKey
		if o.ObjectType == objectPublicKey {
			lt = linkPrivateKey
		}
		add("Link", ttlv.Struct(av, ttlv.Enum(tagLinkType, lt), ttlv.Text(tagLinkedObjectID, o.LinkedID)))
	}
	add("Extractable", ttlv.Bool(av, o.Extractable))
	add("Sensitive", ttlv.Bool(av, !o.Extractable))
	for _, k := range sortedKeys(o.Custom) {
		add(k, ttlv.Text(av, o.Custom[k]))
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// encodeAttrs writes attributes in the form of version v: 1.x Attribute
// structures (with an index for multi-valued ones), or one 2.0 Attributes
// structure whose children carry each attribute's own tag.
func encodeAttrs(v version, attrs []attrValue) []ttlv.Item {
	if v.major >= 2 {
		as := ttlv.Struct(tagAttributes)
		for _, a := range attrs {
			d, ok := attrByName(a.name)
			if !ok {
				continue // custom attributes have no 2.0 tag here
			}
			it := a.value
			it.Tag = d.tag
			as.Children = append(as.Children, it)
		}
		return []ttlv.Item{as}
	}
	var out []ttlv.Item
	seen := map[string]int{}
	for _, a := range attrs {
		if d, ok := attrByName(a.name); ok && (d.tag == tagExtractable || d.tag == tagSensitive) && v.minor < 4 {
			continue // 1.x before 1.4 has no Sensitive or Extractable
		}
		it := ttlv.Struct(tagAttribute, ttlv.Text(tagAttributeName, a.name))
		if i := seen[a.name]; i > 0 {
			it.Children = append(it.Children, ttlv.Int(tagAttributeIndex, int32(i)))
		}
		seen[a.name]++
		it.Children = append(it.Children, a.value)
		out = append(out, it)
	}
	return out
}

// encodedAttrSize is the most bytes encodeAttrs gives attribute a in
// version v: its value under its own tag (2.0, none for a custom
// attribute, which has no 2.0 tag here), or an Attribute structure with
// its name, an index and its value (1.x).
func encodedAttrSize(v version, a attrValue) int {
	if v.major >= 2 {
		if _, ok := attrByName(a.name); !ok {
			return 0
		}
		return a.value.Size()
	}
	return ttlv.HeaderSize + ttlv.Text(tagAttributeName, a.name).Size() + ttlv.Int(tagAttributeIndex, 0).Size() + a.value.Size()
}

// requestedAttrNames reads the attribute names a Get Attributes request
// asks for, in either form, each once in the order first asked: the answer
// gives every instance of each name asked for, so a name asked twice would
// repeat them all (20,000 times "Name" on an object of 16 long names asks
// for hundreds of megabytes).
func requestedAttrNames(payload ttlv.Item) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	for _, n := range payload.ChildrenOf(tagAttributeName) {
		if n.Type != ttlv.TypeTextString {
			return nil, invalidMessage("Attribute Name must be a Text String")
		}
		add(n.Text())
	}
	for _, r := range payload.ChildrenOf(tagAttributeReference) {
		if r.Type != ttlv.TypeEnumeration {
			return nil, featureNotSupported("only attribute references by tag are supported")
		}
		d, ok := attrByTag(ttlv.Tag(r.Int))
		if !ok {
			return nil, invalidField("attribute reference 0x%06x is not supported", r.Int)
		}
		add(d.name)
	}
	return names, nil
}

// checkShown refuses a text a client asks to store that holds a character
// keys.IsDisplayControl names: a C0 or C1 control (U+009B starts an escape
// sequence on a terminal), DEL, or a bidirectional formatting character,
// which would show the text in another order than it is stored. Names,
// Object Groups and custom attributes are printed by tools and logs, as
// descriptions and tags are. The replicated state refuses only C0 and DEL
// (cluster.checkText, unchanged so that old log entries apply the same
// way), so the refusal is here, before anything is proposed. Only values
// being stored are checked: searching for, or deleting, a value an older
// version stored stays possible.
func checkShown(av attrValue) error {
	if broker.KMIPCustomAttribute(av.name) {
		if err := shownText("custom attribute name", av.name); err != nil {
			return err
		}
		if av.value.Type == ttlv.TypeTextString {
			return shownText(fmt.Sprintf("custom attribute %q", av.name), av.value.Text())
		}
		return nil
	}
	switch {
	case av.name == "Name" && av.value.Type == ttlv.TypeStructure:
		if nv, ok := av.value.Child(tagNameValue); ok && nv.Type == ttlv.TypeTextString {
			return shownText("Name", nv.Text())
		}
	case (av.name == "Object Group" || av.name == "Operation Policy Name") && av.value.Type == ttlv.TypeTextString:
		return shownText(av.name, av.value.Text())
	}
	return nil
}

// shownText is checkShown's test of one text, what naming it.
func shownText(what, s string) error {
	if r, ok := keys.FirstDisplayControl(s); ok {
		return invalidField("%s must not contain control characters or bidirectional formatting characters (U+%04X)", what, r)
	}
	return nil
}
