package kmip

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/hsmbroker/hsmbroker/broker"
	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
)

// batchEnv is what the items of one request share: the ID Placeholder,
// the object id the previous item produced, used by an item that names
// none (cleared by an item that fails and by a Locate that finds nothing,
// cleared says why); and the room left in the response, in bytes.
type batchEnv struct {
	placeholder string
	cleared     string
	room        int
}

// clearPlaceholder clears the ID Placeholder, for the reason why.
func (env *batchEnv) clearPlaceholder(why string) {
	env.placeholder, env.cleared = "", why
}

// itemHead is what a batch item says of itself, decoded once: for its
// answer, whether it runs or not, and for the work.
type itemHead struct {
	op      uint32     // 0 when the item names none
	batchID *ttlv.Item // the Unique Batch Item ID, if valid
	payload ttlv.Item
	action  string // the audited action
	// err says why the item cannot run (Invalid Message, Operation Not
	// Supported), nil if it can.
	err error
}

// readItem decodes batch item bi's head.
func readItem(bi ttlv.Item) itemHead {
	h := itemHead{action: "kmip:Message"}
	if id, ok := bi.Child(tagUniqueBatchItemID); ok {
		if id.Type != ttlv.TypeByteString || len(id.Bytes) > 64 {
			h.err = invalidMessage("Unique Batch Item ID must be a Byte String of at most 64 bytes")
			return h
		}
		h.batchID = &id
	}
	opItem, ok := bi.Child(tagOperation)
	if !ok || opItem.Type != ttlv.TypeEnumeration {
		h.err = invalidMessage("the batch item has no Operation")
		return h
	}
	h.op = uint32(opItem.Int)
	if h.payload, ok = bi.Child(tagRequestPayload); !ok || h.payload.Type != ttlv.TypeStructure {
		h.err = invalidMessage("the batch item has no Request Payload")
		return h
	}
	name, known := opNames[h.op]
	if !known {
		h.action = "kmip:Operation" + opString(h.op)
		h.err = &opError{reason: reasonOperationNotSupported, msg: "operation " + opString(h.op) + " is not supported"}
		return h
	}
	h.action = "kmip:" + name
	return h
}

// handleItem answers one batch item as one audited request of the core.
func (s *Server) handleItem(ctx context.Context, cert *x509.Certificate, peer string, v version, h itemHead, env *batchEnv) (ttlv.Item, bool) {
	if h.err != nil {
		s.auditRefused(ctx, cert, peer, h.action, h.err)
		return failedItem(h.op, h.batchID, h.err), true
	}
	op, batchID, payload := h.op, h.batchID, h.payload
	// The object the item acts on, named by its Unique Identifier or by
	// the ID Placeholder, is resolved once, here: the one id is
	// authorized, audited (key_ref, in the intent line of a change too)
	// and acted on. An item that cannot name one is audited with what it
	// sent, and fails after the role gate.
	var objectID string
	var idErr error
	if actsOnObject(op) {
		objectID, idErr = resolveObjectID(payload, env)
	}
	auditID := objectID
	if idErr != nil {
		if u, ok := payload.Child(tagUniqueIdentifier); ok && u.Type == ttlv.TypeTextString {
			auditID = u.Text()
		}
		if len(auditID) > maxUniqueIDLen {
			auditID = auditID[:maxUniqueIDLen]
		}
	}
	ctx = s.cfg.Service.BeginRequest(ctx, broker.Call{Front: broker.FrontKMIP, Action: h.action, RequestID: newRequestID(), Peer: peer})
	ctx = broker.KMIPPrincipal(ctx, cert)
	var out ttlv.Item
	reason, held := "", false
	if !broker.KMIPReadsNothing(h.action) {
		reason, held = s.waitHeld(ctx)
	}
	// After the wait, so that a node that is still not ready says why.
	err := s.core.Authorize(ctx, cert, h.action, auditID)
	if err == nil && held {
		err = &opError{reason: reasonGeneralFailure, msg: "KMIP is not ready on this node (" + reason + "); retry"}
	}
	if err == nil {
		err = idErr
	}
	if err == nil {
		out, err = s.dispatch(ctx, v, op, payload, env, objectID)
	}
	if err == nil && out.Size()+itemOverhead > env.room {
		// Decided before the audit line, which then says what the client
		// got. What was read is not sent: wipe it (a Get's key material).
		err = tooLarge(out.Size()+itemOverhead, env.room)
		wipe(out)
		out = ttlv.Item{}
	}
	result, code := "OK", "Success"
	if err != nil {
		oe := asOpError(err)
		if oe.reason == reasonWrongLifecycleState && v.major < 2 {
			oe = &opError{reason: reasonPermissionDenied, msg: oe.msg} // 1.x has no Wrong Key Lifecycle State
		}
		err = oe
		result, code = reasonName(oe.reason), "OperationFailed"
	}
	if aerr := s.cfg.Service.EndRequest(ctx, result, code); aerr != nil {
		return failedItem(op, batchID, &opError{reason: reasonGeneralFailure, msg: asOpError(aerr).msg}), true
	}
	if err != nil {
		return failedItem(op, batchID, err), true
	}
	it := ttlv.Struct(tagBatchItem, ttlv.Enum(tagOperation, op))
	if batchID != nil {
		it.Children = append(it.Children, *batchID)
	}
	it.Children = append(it.Children, ttlv.Enum(tagResultStatus, statusSuccess), out)
	return it, false
}

// itemOverhead is the size of a successful batch item around its
// payload: operation, a Unique Batch Item ID of up to 64 bytes, status.
const itemOverhead = 8 + 16 + 8 + 64 + 16

// tooLarge is the Response Too Large of an answer of size bytes, batch
// item included, where room is left.
func tooLarge(size, room int) error {
	return &opError{reason: reasonResponseTooLarge, msg: fmt.Sprintf("the answer (%d bytes) does not fit in what is left of the response (%d bytes; Maximum Response Size, or this server's limit)", size, max(room, 0))}
}

// wipe zeroes the bytes of it and its children.
func wipe(it ttlv.Item) {
	clear(it.Bytes)
	for _, c := range it.Children {
		wipe(c)
	}
}

// actsOnObject reports whether operation op acts on one existing object,
// which the request names by its Unique Identifier or the ID Placeholder.
func actsOnObject(op uint32) bool {
	switch op {
	case opDiscoverVersions, opQuery, opRegister, opCreate, opLocate, opCreateKeyPair:
		return false
	}
	return true
}

// dispatch runs one item. id is the object an operation that acts on one
// (actsOnObject) acts on, as handleItem resolved it.
func (s *Server) dispatch(ctx context.Context, v version, op uint32, p ttlv.Item, env *batchEnv, id string) (ttlv.Item, error) {
	switch op {
	// Every answer is bounded before it is built: by a small size that
	// does not grow with the request (Discover Versions, Query: each
	// version or function is answered once, however often it is asked;
	// Register, Create, Create Key Pair, Activate, Revoke, Destroy,
	// Add/Modify/Set/Delete Attribute: an id or two and at most one
	// attribute), by the core's limits (Locate: MaxKMIPLocate ids; Get:
	// 4096 bytes of material or one public key; Encrypt, Decrypt, MAC,
	// Sign: 64 KiB of data; Get Attribute List: each of the object's
	// attribute names once), or, where the object's attributes can make
	// it large, by checking the room while it is built (Get Attributes).
	// handleItem checks the finished answer against the room once more.
	case opDiscoverVersions:
		return discoverVersions(p)
	case opQuery:
		return query(p)
	case opRegister:
		return s.register(ctx, p, env)
	case opCreate:
		return s.create(ctx, p, env)
	case opLocate:
		return s.locate(ctx, p, env)
	case opCreateKeyPair:
		return s.createKeyPair(ctx, p, env)
	}
	env.placeholder = id
	switch op {
	case opGet:
		return s.get(ctx, p, id)
	case opGetAttributes:
		return s.getAttributes(ctx, v, p, id, env.room-itemOverhead)
	case opGetAttributeList:
		return s.getAttributeList(ctx, v, id)
	case opActivate:
		_, err := s.core.Activate(ctx, id)
		return idPayload(id), err
	case opRevoke:
		return s.revoke(ctx, p, id)
	case opDestroy:
		return idPayload(id), s.core.Destroy(ctx, id)
	case opAddAttribute, opModifyAttribute, opSetAttribute, opDeleteAttribute:
		return s.changeAttribute(ctx, v, op, p, id)
	case opEncrypt, opDecrypt:
		return s.crypt(ctx, op == opEncrypt, p, id)
	case opMAC:
		return s.mac(ctx, p, id)
	case opSign, opSignatureVerify:
		return s.sign(ctx, op == opSign, p, id)
	}
	return ttlv.Item{}, &opError{reason: reasonOperationNotSupported, msg: "operation " + opString(op) + " is not supported"}
}

// resolveObjectID is the Unique Identifier a request names, or the ID
// Placeholder.
func resolveObjectID(p ttlv.Item, env *batchEnv) (string, error) {
	u, ok := p.Child(tagUniqueIdentifier)
	if !ok {
		if env.placeholder == "" && env.cleared != "" {
			return "", missingData("Unique Identifier is required: there is no ID Placeholder, %s", env.cleared)
		}
		if env.placeholder == "" {
			return "", missingData("Unique Identifier is required")
		}
		return env.placeholder, nil
	}
	if u.Type != ttlv.TypeTextString || len(u.Bytes) == 0 || len(u.Bytes) > maxUniqueIDLen {
		return "", invalidField("Unique Identifier must be a Text String of 1 to %d bytes", maxUniqueIDLen)
	}
	return u.Text(), nil
}

// maxUniqueIDLen bounds a Unique Identifier a request names, in bytes;
// the room kept for a change's answer counts identifiers this long
// (maxChangeAnswer).
const maxUniqueIDLen = 256

func idPayload(id string) ttlv.Item {
	return ttlv.Struct(tagResponsePayload, ttlv.Text(tagUniqueIdentifier, id))
}

func discoverVersions(p ttlv.Item) (ttlv.Item, error) {
	out := ttlv.Struct(tagResponsePayload)
	asked := p.ChildrenOf(tagProtocolVersion)
	for _, sv := range supported {
		if len(asked) == 0 {
			out.Children = append(out.Children, sv.item())
			continue
		}
		for _, a := range asked {
			if av, err := parseVersion(a); err == nil && av == sv {
				// Once, however often the client lists it: the answer is
				// at most the len(supported) versions.
				out.Children = append(out.Children, sv.item())
				break
			}
		}
	}
	return out, nil
}

func query(p ttlv.Item) (ttlv.Item, error) {
	out := ttlv.Struct(tagResponsePayload)
	// Each function is answered once, however often the request names
	// it: a request of 20,000 functions (320 KB) otherwise builds an
	// answer twenty times its size. Deduplicated, the answer is at most
	// the 26 entries below, about 400 bytes.
	asked := map[uint32]bool{}
	for _, f := range p.ChildrenOf(tagQueryFunction) {
		if f.Type != ttlv.TypeEnumeration {
			return ttlv.Item{}, invalidField("Query Function must be an Enumeration")
		}
		if asked[uint32(f.Int)] {
			continue
		}
		asked[uint32(f.Int)] = true
		switch uint32(f.Int) {
		case queryOperations:
			for _, op := range []uint32{opCreate, opRegister, opLocate, opGet, opGetAttributes, opGetAttributeList,
				opAddAttribute, opModifyAttribute, opDeleteAttribute, opActivate, opRevoke, opDestroy, opQuery, opDiscoverVersions, opSetAttribute,
				opEncrypt, opDecrypt, opMAC, opCreateKeyPair, opSign, opSignatureVerify} {
				out.Children = append(out.Children, ttlv.Enum(tagOperation, op))
			}
		case queryObjects:
			out.Children = append(out.Children, ttlv.Enum(tagObjectType, objectSymmetricKey), ttlv.Enum(tagObjectType, objectSecretData),
				ttlv.Enum(tagObjectType, objectPublicKey), ttlv.Enum(tagObjectType, objectPrivateKey))
		case queryServerInfo:
			out.Children = append(out.Children, ttlv.Text(tagVendorIdentification, "hsmbroker"))
		}
	}
	return out, nil
}

// material reads the key material of a Register request's object: a Key
// Block in Raw or Opaque format, or a Transparent Symmetric Key.
func material(obj ttlv.Item) ([]byte, uint32, int32, error) {
	kb, ok := obj.Child(tagKeyBlock)
	if !ok || kb.Type != ttlv.TypeStructure {
		return nil, 0, 0, missingData("the object has no Key Block")
	}
	if _, ok := kb.Child(tagKeyWrappingData); ok {
		return nil, 0, 0, featureNotSupported("wrapped key blocks are not accepted; send the material in the clear over TLS")
	}
	ft, ok := kb.Child(tagKeyFormatType)
	if !ok || ft.Type != ttlv.TypeEnumeration {
		return nil, 0, 0, missingData("the Key Block has no Key Format Type")
	}
	kv, ok := kb.Child(tagKeyValue)
	if !ok || kv.Type != ttlv.TypeStructure {
		return nil, 0, 0, missingData("the Key Block has no Key Value")
	}
	km, ok := kv.Child(tagKeyMaterial)
	if !ok {
		return nil, 0, 0, missingData("the Key Value has no Key Material")
	}
	var b []byte
	switch uint32(ft.Int) {
	case formatRaw, formatOpaque:
		if km.Type != ttlv.TypeByteString {
			return nil, 0, 0, invalidField("Key Material must be a Byte String in Raw and Opaque formats")
		}
		b = km.Bytes
	case formatTransparentSymmetric:
		k, ok := km.Child(tagKey)
		if km.Type != ttlv.TypeStructure || !ok || k.Type != ttlv.TypeByteString {
			return nil, 0, 0, invalidField("a Transparent Symmetric Key needs a Key Byte String")
		}
		b = k.Bytes
	default:
		return nil, 0, 0, &opError{reason: reasonKeyFormatNotSupported, msg: "Key Format Type must be Raw, Opaque or Transparent Symmetric Key"}
	}
	var alg uint32
	var length int32
	if a, ok := kb.Child(tagCryptographicAlgorithm); ok && a.Type == ttlv.TypeEnumeration {
		alg = uint32(a.Int)
	}
	if l, ok := kb.Child(tagCryptographicLength); ok && l.Type == ttlv.TypeInteger {
		length = int32(l.Int)
	}
	return b, alg, length, nil
}

// requestAttrs reads the attributes of a Create or Register request.
func requestAttrs(p ttlv.Item) (attrSet, error) {
	var as attrSet
	avs, err := decodeAttributes(p)
	if err != nil {
		return as, err
	}
	for _, av := range avs {
		if err := checkShown(av); err != nil {
			return as, err
		}
		if err := as.apply(av, true); err != nil {
			return as, err
		}
	}
	if as.state != 0 {
		return as, invalidField("State is set by the server")
	}
	return as, nil
}

func (as attrSet) core() broker.KMIPAttributes {
	return broker.KMIPAttributes{Names: as.names, Groups: as.groups, Custom: as.custom, Algorithm: as.algorithm,
		Length: as.length, UsageMask: as.usageMask, NotExtractable: as.notExtractable, ActivationDate: as.activation}
}

func requestObjectType(p ttlv.Item) (uint32, error) {
	ot, ok := p.Child(tagObjectType)
	if !ok || ot.Type != ttlv.TypeEnumeration {
		return 0, missingData("Object Type is required")
	}
	return uint32(ot.Int), nil
}

func (s *Server) register(ctx context.Context, p ttlv.Item, env *batchEnv) (ttlv.Item, error) {
	ot, err := requestObjectType(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	as, err := requestAttrs(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	req := broker.KMIPRegisterRequest{WrappingKey: s.cfg.WrappingKey, ObjectType: ot, Attributes: as.core()}
	switch ot {
	case objectSymmetricKey:
		obj, ok := p.Child(tagSymmetricKey)
		if !ok {
			return ttlv.Item{}, missingData("Register of a Symmetric Key needs the Symmetric Key")
		}
		b, alg, length, err := material(obj)
		if err != nil {
			return ttlv.Item{}, err
		}
		req.Material = b
		if alg != 0 {
			if as.algorithm != 0 && as.algorithm != alg {
				return ttlv.Item{}, invalidField("Cryptographic Algorithm is %d in the Key Block but %d in the attributes", alg, as.algorithm)
			}
			req.Attributes.Algorithm = alg
		}
		// The one length the core checks against the material.
		if length != 0 {
			if as.length != 0 && as.length != length {
				return ttlv.Item{}, invalidField("Cryptographic Length is %d in the Key Block but %d in the attributes", length, as.length)
			}
			req.Attributes.Length = length
		}
	case objectSecretData:
		obj, ok := p.Child(tagSecretData)
		if !ok {
			return ttlv.Item{}, missingData("Register of Secret Data needs the Secret Data")
		}
		sdt, ok := obj.Child(tagSecretDataType)
		if !ok || sdt.Type != ttlv.TypeEnumeration || sdt.Int < 1 || sdt.Int > 2 {
			return ttlv.Item{}, invalidField("Secret Data Type must be Password or Seed")
		}
		b, _, _, err := material(obj)
		if err != nil {
			return ttlv.Item{}, err
		}
		req.Material, req.Attributes.SecretDataType = b, uint32(sdt.Int)
	default:
		return ttlv.Item{}, &opError{reason: reasonOperationNotSupported, msg: "only Symmetric Key and Secret Data objects can be registered"}
	}
	if err := s.core.CheckRoom(ctx, 1); err != nil {
		clear(req.Material)
		return ttlv.Item{}, err
	}
	o, err := s.core.Register(ctx, req)
	clear(req.Material)
	if err != nil {
		return ttlv.Item{}, err
	}
	env.placeholder = o.ID
	return idPayload(o.ID), nil
}

func (s *Server) create(ctx context.Context, p ttlv.Item, env *batchEnv) (ttlv.Item, error) {
	ot, err := requestObjectType(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	if ot != objectSymmetricKey {
		return ttlv.Item{}, &opError{reason: reasonOperationNotSupported, msg: "Create makes Symmetric Keys only"}
	}
	as, err := requestAttrs(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	if err := s.core.CheckRoom(ctx, 1); err != nil {
		return ttlv.Item{}, err
	}
	o, err := s.core.Create(ctx, broker.KMIPCreateRequest{WrappingKey: s.cfg.WrappingKey, Attributes: as.core()})
	if err != nil {
		return ttlv.Item{}, err
	}
	env.placeholder = o.ID
	return ttlv.Struct(tagResponsePayload, ttlv.Enum(tagObjectType, objectSymmetricKey), ttlv.Text(tagUniqueIdentifier, o.ID)), nil
}

func (s *Server) locate(ctx context.Context, p ttlv.Item, env *batchEnv) (ttlv.Item, error) {
	req := broker.KMIPLocateRequest{WrappingKey: s.cfg.WrappingKey}
	for _, f := range []struct {
		tag ttlv.Tag
		dst *int
	}{{tagMaximumItems, &req.MaxItems}, {tagOffsetItems, &req.Offset}} {
		if it, ok := p.Child(f.tag); ok {
			if it.Type != ttlv.TypeInteger || it.Int < 0 {
				return ttlv.Item{}, invalidField("Maximum Items and Offset Items must be non-negative Integers")
			}
			*f.dst = int(it.Int)
		}
	}
	avs, err := decodeAttributes(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	var as attrSet
	for _, av := range avs {
		switch av.name {
		case "Name", "Object Group", "Object Type", "State":
		default:
			return ttlv.Item{}, invalidField("Locate by %q is not supported; by Name, Object Type, State and Object Group it is", av.name)
		}
		if err := as.apply(av, false); err != nil {
			return ttlv.Item{}, err
		}
	}
	req.Names, req.Groups, req.ObjectType, req.State = as.names, as.groups, as.objectType, as.state
	ids, err := s.core.Locate(ctx, req)
	if err != nil {
		return ttlv.Item{}, err
	}
	out := ttlv.Struct(tagResponsePayload)
	for _, id := range ids {
		out.Children = append(out.Children, ttlv.Text(tagUniqueIdentifier, id))
	}
	// A Locate that finds nothing leaves no placeholder: the next item
	// that names no object must fail, not act on what an item before the
	// Locate produced (Register; Locate of a name no object has; Destroy
	// would destroy the registered object).
	if len(ids) > 0 {
		env.placeholder = ids[0]
	} else {
		env.clearPlaceholder("the Locate before it found no object")
	}
	return out, nil
}

func (s *Server) get(ctx context.Context, p ttlv.Item, id string) (ttlv.Item, error) {
	format := uint32(0)
	if f, ok := p.Child(tagKeyFormatType); ok {
		if f.Type != ttlv.TypeEnumeration {
			return ttlv.Item{}, invalidField("Key Format Type must be an Enumeration")
		}
		format = uint32(f.Int)
	}
	if _, ok := p.Child(tagKeyWrappingSpec); ok {
		return ttlv.Item{}, featureNotSupported("Get with a Key Wrapping Specification is not supported")
	}
	m, err := s.core.Get(ctx, id)
	if err != nil {
		return ttlv.Item{}, err
	}
	o, pt := m.Object, m.Material
	// pt goes into the response, which serveConn clears once written.
	var km ttlv.Item
	switch {
	case o.ObjectType == objectSecretData && (format == 0 || format == formatOpaque):
		format, km = formatOpaque, ttlv.Bytes(tagKeyMaterial, pt)
	case o.ObjectType == objectSymmetricKey && (format == 0 || format == formatRaw):
		format, km = formatRaw, ttlv.Bytes(tagKeyMaterial, pt)
	case o.ObjectType == objectSymmetricKey && format == formatTransparentSymmetric:
		km = ttlv.Struct(tagKeyMaterial, ttlv.Bytes(tagKey, pt))
	case o.ObjectType == objectPublicKey && (format == 0 || format == formatX509):
		format, km = formatX509, ttlv.Bytes(tagKeyMaterial, pt)
	default:
		return ttlv.Item{}, &opError{reason: reasonKeyFormatNotSupported, msg: "this object is served in Raw (symmetric keys), Opaque (secret data) or X.509 (public keys) format"}
	}
	kb := ttlv.Struct(tagKeyBlock, ttlv.Enum(tagKeyFormatType, format), ttlv.Struct(tagKeyValue, km))
	var obj ttlv.Item
	if o.ObjectType == objectSecretData {
		obj = ttlv.Struct(tagSecretData, ttlv.Enum(tagSecretDataType, o.SecretDataType), kb)
	} else {
		kb.Children = append(kb.Children, ttlv.Enum(tagCryptographicAlgorithm, o.Algorithm), ttlv.Int(tagCryptographicLength, o.Length))
		tag := tagSymmetricKey
		if o.ObjectType == objectPublicKey {
			tag = tagPublicKey
		}
		obj = ttlv.Struct(tag, kb)
	}
	return ttlv.Struct(tagResponsePayload, ttlv.Enum(tagObjectType, o.ObjectType), ttlv.Text(tagUniqueIdentifier, o.ID), obj), nil
}

// getAttributes serves Get Attributes within room, the bytes its payload
// may take. The names asked for are distinct (requestedAttrNames), so the
// answer holds each of the object's attributes at most once; an object may
// still carry some 200 KB of names, groups and custom attributes, so the
// size is counted as attributes are picked, and the answer is refused as
// Response Too Large before it is built larger than room.
func (s *Server) getAttributes(ctx context.Context, v version, p ttlv.Item, id string, room int) (ttlv.Item, error) {
	names, err := requestedAttrNames(p)
	if err != nil {
		return ttlv.Item{}, err
	}
	o, err := s.core.Object(ctx, id)
	if err != nil {
		return ttlv.Item{}, err
	}
	out := ttlv.Struct(tagResponsePayload, ttlv.Text(tagUniqueIdentifier, o.ID))
	size := out.Size()
	if v.major >= 2 {
		size += ttlv.HeaderSize // the Attributes structure
	}
	all := objectAttrs(o)
	var pick []attrValue
	add := func(a attrValue) error {
		if size += encodedAttrSize(v, a); size > room {
			return tooLarge(size+itemOverhead, room+itemOverhead)
		}
		pick = append(pick, a)
		return nil
	}
	if len(names) == 0 {
		// Every attribute, but Sensitive, Extractable and Link only when
		// asked for by name: clients older than KMIP 1.4 (PyKMIP 0.10 too)
		// fail on attributes they do not know, and PyKMIP cannot read a
		// Link.
		for _, a := range all {
			if a.name != "Sensitive" && a.name != "Extractable" && a.name != "Link" {
				if err := add(a); err != nil {
					return ttlv.Item{}, err
				}
			}
		}
	}
	for _, n := range names {
		for _, a := range all {
			if a.name == n {
				if err := add(a); err != nil {
					return ttlv.Item{}, err
				}
			}
		}
	}
	out.Children = append(out.Children, encodeAttrs(v, pick)...)
	return out, nil
}

func (s *Server) getAttributeList(ctx context.Context, v version, id string) (ttlv.Item, error) {
	o, err := s.core.Object(ctx, id)
	if err != nil {
		return ttlv.Item{}, err
	}
	out := ttlv.Struct(tagResponsePayload, ttlv.Text(tagUniqueIdentifier, o.ID))
	seen := map[string]bool{}
	for _, a := range objectAttrs(o) {
		if seen[a.name] {
			continue
		}
		seen[a.name] = true
		if v.major >= 2 {
			if d, ok := attrByName(a.name); ok {
				out.Children = append(out.Children, ttlv.Enum(tagAttributeReference, uint32(d.tag)))
			}
			continue
		}
		out.Children = append(out.Children, ttlv.Text(tagAttributeName, a.name))
	}
	return out, nil
}

func (s *Server) revoke(ctx context.Context, p ttlv.Item, id string) (ttlv.Item, error) {
	rr, ok := p.Child(tagRevocationReason)
	if !ok || rr.Type != ttlv.TypeStructure {
		return ttlv.Item{}, missingData("Revocation Reason is required")
	}
	// The front checks the encoding; the core's Revoke checks the code's
	// range and the message's length (the message is already bounded by
	// the TTLV message limit).
	code, ok := rr.Child(tagRevocationReasonCode)
	if !ok || code.Type != ttlv.TypeEnumeration {
		return ttlv.Item{}, invalidField("Revocation Reason Code must be a KMIP revocation reason")
	}
	msg := ""
	if m, ok := rr.Child(tagRevocationMessage); ok {
		if m.Type != ttlv.TypeTextString {
			return ttlv.Item{}, invalidField("Revocation Message must be a Text String of at most %d bytes", broker.MaxKMIPRevocationMessage)
		}
		msg = m.Text()
		if err := shownText("Revocation Message", msg); err != nil {
			return ttlv.Item{}, err
		}
	}
	_, err := s.core.Revoke(ctx, broker.KMIPRevokeRequest{ID: id, Reason: uint32(code.Int), Message: msg})
	return idPayload(id), err
}

// Attribute operations as the core names them.
var attributeOps = map[uint32]broker.KMIPAttributeOp{
	opAddAttribute: broker.KMIPAddAttribute, opModifyAttribute: broker.KMIPModifyAttribute,
	opSetAttribute: broker.KMIPSetAttribute, opDeleteAttribute: broker.KMIPDeleteAttribute,
}

// changeAttribute serves Add, Modify, Set (2.0) and Delete Attribute: it
// decodes the attribute named in either protocol form, and the core
// decides whether a client may change it and how.
func (s *Server) changeAttribute(ctx context.Context, v version, op uint32, p ttlv.Item, id string) (ttlv.Item, error) {
	var target attrValue
	var current *attrValue
	switch {
	case op == opDeleteAttribute && v.major < 2:
		n, ok := p.Child(tagAttributeName)
		if !ok || n.Type != ttlv.TypeTextString {
			return ttlv.Item{}, missingData("Attribute Name is required")
		}
		target.name = n.Text()
		if i, ok := p.Child(tagAttributeIndex); ok && i.Type == ttlv.TypeInteger {
			target.index = int(i.Int)
		}
	case op == opDeleteAttribute:
		if ca, ok := p.Child(tagCurrentAttribute); ok && len(ca.Children) == 1 {
			av, err := attr20(ca.Children[0])
			if err != nil {
				return ttlv.Item{}, err
			}
			target = av
		} else if r, ok := p.Child(tagAttributeReference); ok && r.Type == ttlv.TypeEnumeration {
			d, ok := attrByTag(ttlv.Tag(r.Int))
			if !ok {
				return ttlv.Item{}, invalidField("attribute reference 0x%06x is not supported", r.Int)
			}
			target.name = d.name
		} else {
			return ttlv.Item{}, missingData("Current Attribute or Attribute Reference is required")
		}
	case v.major < 2:
		a, ok := p.Child(tagAttribute)
		if !ok {
			return ttlv.Item{}, missingData("Attribute is required")
		}
		av, err := decodeAttribute(a)
		if err != nil {
			return ttlv.Item{}, err
		}
		if av.value.Type == 0 {
			return ttlv.Item{}, missingData("Attribute Value is required")
		}
		target = av
	default:
		na, ok := p.Child(tagNewAttribute)
		if !ok || len(na.Children) != 1 {
			return ttlv.Item{}, missingData("New Attribute with one attribute is required")
		}
		av, err := attr20(na.Children[0])
		if err != nil {
			return ttlv.Item{}, err
		}
		target = av
		if ca, ok := p.Child(tagCurrentAttribute); ok && len(ca.Children) == 1 {
			cur, err := attr20(ca.Children[0])
			if err != nil {
				return ttlv.Item{}, err
			}
			current = &cur
		}
	}
	edit := broker.KMIPAttributeEdit{ID: id, Op: attributeOps[op], Name: target.name, Index: target.index,
		Decode: func() (broker.KMIPAttributeValue, *broker.KMIPAttributeValue, error) {
			var nv attrSet
			if op != opDeleteAttribute {
				if err := checkShown(target); err != nil {
					return broker.KMIPAttributeValue{}, nil, err
				}
			}
			if err := nv.apply(target, true); err != nil {
				return broker.KMIPAttributeValue{}, nil, err
			}
			value := broker.KMIPAttributeValue{Text: nv.first(target.name), UsageMask: nv.usageMask, Date: nv.activation}
			if current == nil {
				return value, nil, nil
			}
			var cv attrSet
			if err := cv.apply(*current, true); err != nil {
				return broker.KMIPAttributeValue{}, nil, err
			}
			// The instance to change is named by a Name or Object Group.
			return value, &broker.KMIPAttributeValue{Text: cv.first("")}, nil
		}}
	o, err := s.core.EditAttribute(ctx, edit)
	if err != nil {
		return ttlv.Item{}, err
	}
	out := idPayload(id)
	if v.major < 2 && op != opDeleteAttribute {
		for _, a := range objectAttrs(o) {
			if a.name == target.name {
				out.Children = append(out.Children, encodeAttrs(v, []attrValue{a})[0])
				break
			}
		}
	}
	return out, nil
}

// AES modes as KMIP names them.
const (
	modeCBC      uint32 = 1
	modeGCM      uint32 = 9
	paddingNone  uint32 = 1
	paddingPKCS5 uint32 = 3
)

// crypt serves Encrypt and Decrypt with an AES key: CBC (PKCS#5 padding,
// the default, or none) and GCM (KMIP 1.4's authenticated encryption
// fields), run in the HSM.
func (s *Server) crypt(ctx context.Context, encrypt bool, p ttlv.Item, id string) (ttlv.Item, error) {
	req := broker.KMIPCryptRequest{ID: id, Encrypt: encrypt, Mode: broker.KMIPModeCBCPad}
	if cp, ok := p.Child(tagCryptographicParams); ok {
		mode, padding := modeCBC, paddingPKCS5
		if m, ok := cp.Child(tagBlockCipherMode); ok {
			if m.Type != ttlv.TypeEnumeration {
				return ttlv.Item{}, invalidField("Block Cipher Mode must be an Enumeration")
			}
			mode = uint32(m.Int)
		}
		if pm, ok := cp.Child(tagPaddingMethod); ok {
			if pm.Type != ttlv.TypeEnumeration {
				return ttlv.Item{}, invalidField("Padding Method must be an Enumeration")
			}
			padding = uint32(pm.Int)
		}
		if a, ok := cp.Child(tagCryptographicAlgorithm); ok && (a.Type != ttlv.TypeEnumeration || a.Int != 3) {
			return ttlv.Item{}, &opError{reason: reasonFeatureNotSupported, msg: "only AES is served"}
		}
		switch {
		case mode == modeCBC && padding == paddingPKCS5:
		case mode == modeCBC && padding == paddingNone:
			req.Mode = broker.KMIPModeCBC
		case mode == modeGCM:
			req.Mode = broker.KMIPModeGCM
		default:
			return ttlv.Item{}, &opError{reason: reasonFeatureNotSupported, msg: "AES is served in CBC (PKCS#5 padding or none) and GCM modes"}
		}
	}
	d, ok := p.Child(tagData)
	if !ok || d.Type != ttlv.TypeByteString || len(d.Bytes) == 0 {
		return ttlv.Item{}, missingData("Data is required")
	}
	req.Data = d.Bytes
	if iv, ok := p.Child(tagIVCounterNonce); ok {
		if iv.Type != ttlv.TypeByteString {
			return ttlv.Item{}, invalidField("IV/Counter/Nonce must be a Byte String")
		}
		req.IV = iv.Bytes
	} else if !encrypt {
		return ttlv.Item{}, missingData("IV/Counter/Nonce is required to decrypt")
	}
	if a, ok := p.Child(tagAEADData); ok && a.Type == ttlv.TypeByteString {
		req.AAD = a.Bytes
	}
	if !encrypt && req.Mode == broker.KMIPModeGCM {
		tag, ok := p.Child(tagAEADTag)
		if !ok || tag.Type != ttlv.TypeByteString || len(tag.Bytes) != broker.KMIPGCMTagSize {
			return ttlv.Item{}, missingData("a 16-byte Authenticated Encryption Tag is required for GCM")
		}
		req.Data = append(append([]byte(nil), req.Data...), tag.Bytes...)
	}
	res, err := s.core.Crypt(ctx, req)
	if err != nil {
		return ttlv.Item{}, err
	}
	out, iv := res.Data, res.IV
	pl := ttlv.Struct(tagResponsePayload, ttlv.Text(tagUniqueIdentifier, id))
	if encrypt && req.Mode == broker.KMIPModeGCM {
		pl.Children = append(pl.Children, ttlv.Bytes(tagData, out[:len(out)-broker.KMIPGCMTagSize]))
	} else {
		pl.Children = append(pl.Children, ttlv.Bytes(tagData, out))
	}
	if encrypt && len(req.IV) == 0 {
		pl.Children = append(pl.Children, ttlv.Bytes(tagIVCounterNonce, iv))
	}
	if encrypt && req.Mode == broker.KMIPModeGCM {
		pl.Children = append(pl.Children, ttlv.Bytes(tagAEADTag, out[len(out)-broker.KMIPGCMTagSize:]))
	}
	return pl, nil
}

// mac serves MAC: HMAC-SHA256/384/512 with a symmetric key or secret, run
// in the HSM. The algorithm comes from the Cryptographic Parameters, or
// from the key's own Cryptographic Algorithm when they name none.
func (s *Server) mac(ctx context.Context, p ttlv.Item, id string) (ttlv.Item, error) {
	req := broker.KMIPMACRequest{ID: id}
	if cp, ok := p.Child(tagCryptographicParams); ok {
		if a, ok := cp.Child(tagCryptographicAlgorithm); ok {
			if a.Type != ttlv.TypeEnumeration {
				return ttlv.Item{}, invalidField("Cryptographic Algorithm must be an Enumeration")
			}
			req.Algorithm = uint32(a.Int)
		}
	}
	d, ok := p.Child(tagData)
	if !ok || d.Type != ttlv.TypeByteString || len(d.Bytes) == 0 {
		return ttlv.Item{}, missingData("Data is required")
	}
	req.Data = d.Bytes
	out, err := s.core.MAC(ctx, req)
	if err != nil {
		return ttlv.Item{}, err
	}
	return ttlv.Struct(tagResponsePayload, ttlv.Text(tagUniqueIdentifier, id), ttlv.Bytes(tagMACData, out)), nil
}
