package client

import (
	"context"

	pb "github.com/hsmbroker/hsmbroker/proto/hsmbroker/v1"
)

// DataKeyService makes and recovers data keys: the two KMS calls envelope
// encryption needs. Client.DataKeys is the implementation over a broker.
// Implementations must be safe for concurrent use.
type DataKeyService interface {
	// GenerateDataKey returns a fresh random 32-byte AES-256 data key in
	// plaintext, and encrypted under the KMS key keyID with encCtx bound to
	// it. The caller erases plaintext after use.
	GenerateDataKey(ctx context.Context, keyID string, encCtx map[string]string) (plaintext, ciphertextBlob []byte, err error)
	// Decrypt returns the plaintext of a data key from its ciphertext blob
	// and the encryption context it was made with. The caller erases it
	// after use.
	Decrypt(ctx context.Context, ciphertextBlob []byte, encCtx map[string]string) (plaintext []byte, err error)
}

// DataKeys returns the client's DataKeyService: GenerateDataKey with
// DATA_KEY_SPEC_AES_256, and Decrypt, on the broker.
func (c *Client) DataKeys() DataKeyService { return NewDataKeyService(c.Crypto) }

// NewDataKeyService returns a DataKeyService over any CryptoServiceClient.
func NewDataKeyService(cs pb.CryptoServiceClient) DataKeyService { return cryptoDataKeys{cs} }

type cryptoDataKeys struct{ cs pb.CryptoServiceClient }

func (d cryptoDataKeys) GenerateDataKey(ctx context.Context, keyID string, encCtx map[string]string) ([]byte, []byte, error) {
	resp, err := d.cs.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{
		KeyId:             keyID,
		KeySpec:           pb.DataKeySpec_DATA_KEY_SPEC_AES_256,
		EncryptionContext: encCtx,
	})
	if err != nil {
		return nil, nil, err
	}
	return resp.GetPlaintext(), resp.GetCiphertextBlob(), nil
}

func (d cryptoDataKeys) Decrypt(ctx context.Context, blob []byte, encCtx map[string]string) ([]byte, error) {
	resp, err := d.cs.Decrypt(ctx, &pb.DecryptRequest{CiphertextBlob: blob, EncryptionContext: encCtx})
	if err != nil {
		return nil, err
	}
	return resp.GetPlaintext(), nil
}
