package hsmtest

import (
	"io"

	"github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"
)

// KMIPExchange writes one KMIP request message to rw and reads and
// decodes the response message.
func KMIPExchange(rw io.ReadWriter, req ttlv.Item) (ttlv.Item, error) {
	b, err := req.Encode()
	if err != nil {
		return ttlv.Item{}, err
	}
	return KMIPExchangeRaw(rw, b)
}

// KMIPExchangeRaw is KMIPExchange with the request already encoded (or
// deliberately malformed).
func KMIPExchangeRaw(rw io.ReadWriter, b []byte) (ttlv.Item, error) {
	if _, err := rw.Write(b); err != nil {
		return ttlv.Item{}, err
	}
	msg, err := ttlv.ReadMessage(rw, 0)
	if err != nil {
		return ttlv.Item{}, err
	}
	return ttlv.Decode(msg)
}
