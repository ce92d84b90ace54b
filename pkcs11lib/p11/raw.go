package p11

// rawOp is the state of a raw AES operation.
type rawOp struct{}

// prepareRaw checks a raw AES operation. Keys of the broker's own
// ciphertext format cannot serve PKCS#11 AES mechanisms.
func (m *Module) prepareRaw(op *cryptoOp) uint64 {
	if !isAESMech(op.mech.Type) {
		return CKR_MECHANISM_INVALID
	}
	return CKR_KEY_FUNCTION_NOT_PERMITTED
}

func (m *Module) computeRaw(op *cryptoOp) ([]byte, uint64) {
	return nil, CKR_KEY_FUNCTION_NOT_PERMITTED
}
