package awskms

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Request and response shapes of the TrentService operations, with AWS's
// member names. Blobs are []byte (base64 in JSON, as AWS sends them) and
// times are epochTime (seconds since the epoch, as a JSON number).

// epochTime marshals as seconds since the epoch with millisecond
// precision, the AWS JSON protocols' timestamp format.
type epochTime time.Time

func (t epochTime) IsZero() bool { return time.Time(t).IsZero() }

func (t epochTime) MarshalJSON() ([]byte, error) {
	ms := time.Time(t).UnixMilli()
	return strconv.AppendFloat(nil, float64(ms)/1000, 'f', -1, 64), nil
}

// grantTokens is accepted everywhere AWS accepts it and ignored: a grant
// is in force once the answering node has applied it, and a token carries
// no authority of its own (see grant_operations.go).
type grantTokens struct {
	GrantTokens []string
}

// AWS KMS's bounds on GrantTokens, held to although the tokens are
// ignored, so that a request AWS would refuse is refused here too.
const (
	maxGrantTokens      = 10
	maxGrantTokenLength = 8192
)

// checkGrantTokens applies AWS KMS's bounds to GrantTokens.
func (g grantTokens) checkGrantTokens() error {
	if len(g.GrantTokens) > maxGrantTokens {
		return validation("GrantTokens may hold at most %d tokens, got %d", maxGrantTokens, len(g.GrantTokens))
	}
	for _, t := range g.GrantTokens {
		if n := utf8.RuneCountInString(t); n < 1 || n > maxGrantTokenLength {
			return validation("each of GrantTokens must be 1 to %d characters, got %d", maxGrantTokenLength, n)
		}
	}
	return nil
}

// dryRun is the DryRun member of the cryptographic operations.
type dryRun struct {
	DryRun *bool
}

func (d dryRun) isDryRun() bool { return d.DryRun != nil && *d.DryRun }

type keyIDInput struct {
	KeyId string
}

type keyIDOutput struct {
	KeyId string `json:",omitempty"`
}

type empty struct{}

type tag struct {
	TagKey   string
	TagValue string
}

// tagIn is a tag in a request: TagValue is required (it may be empty), so
// a missing one is told from "".
type tagIn struct {
	TagKey   string
	TagValue *string
}

type keyMetadata struct {
	AWSAccountId                string
	KeyId                       string
	Arn                         string
	CreationDate                epochTime `json:",omitzero"`
	Enabled                     bool
	Description                 string
	KeyUsage                    string
	KeyState                    string
	DeletionDate                epochTime `json:",omitzero"`
	Origin                      string
	KeyManager                  string
	CustomerMasterKeySpec       string
	KeySpec                     string
	EncryptionAlgorithms        []string `json:",omitempty"`
	SigningAlgorithms           []string `json:",omitempty"`
	MacAlgorithms               []string `json:",omitempty"`
	MultiRegion                 bool
	PendingDeletionWindowInDays int32 `json:",omitempty"`
}

type keyMetadataOutput struct {
	KeyMetadata *keyMetadata
}

type createKeyInput struct {
	Policy                         *string
	Description                    string
	KeyUsage                       string
	CustomerMasterKeySpec          string
	KeySpec                        string
	Origin                         string
	CustomKeyStoreId               *string
	BypassPolicyLockoutSafetyCheck bool
	Tags                           []tagIn
	MultiRegion                    *bool
	XksKeyId                       *string
}

type describeKeyInput struct {
	KeyId string
	grantTokens
}

type listInput struct {
	Limit  *int32
	Marker string
}

type keyListEntry struct {
	KeyId  string
	KeyArn string
}

type listKeysOutput struct {
	Keys       []keyListEntry
	NextMarker string `json:",omitempty"`
	Truncated  bool
}

type scheduleKeyDeletionInput struct {
	KeyId               string
	PendingWindowInDays *int32
}

type scheduleKeyDeletionOutput struct {
	KeyId               string
	DeletionDate        epochTime
	KeyState            string
	PendingWindowInDays int32
}

type updateKeyDescriptionInput struct {
	KeyId       string
	Description *string
}

type aliasInput struct {
	AliasName   string
	TargetKeyId string
}

type listAliasesInput struct {
	KeyId string
	listInput
}

type aliasListEntry struct {
	AliasName       string
	AliasArn        string
	TargetKeyId     string    `json:",omitempty"`
	CreationDate    epochTime `json:",omitzero"`
	LastUpdatedDate epochTime `json:",omitzero"`
}

type listAliasesOutput struct {
	Aliases    []aliasListEntry
	NextMarker string `json:",omitempty"`
	Truncated  bool
}

type tagResourceInput struct {
	KeyId string
	Tags  []tagIn
}

type untagResourceInput struct {
	KeyId   string
	TagKeys []string
}

type listResourceTagsInput struct {
	KeyId string
	listInput
}

type listResourceTagsOutput struct {
	Tags       []tag
	NextMarker string `json:",omitempty"`
	Truncated  bool
}

type enableKeyRotationInput struct {
	KeyId                string
	RotationPeriodInDays *int32
}

type keyRotationStatusOutput struct {
	KeyId                string
	KeyRotationEnabled   bool
	RotationPeriodInDays int32     `json:",omitempty"`
	NextRotationDate     epochTime `json:",omitzero"`
}

type listKeyRotationsInput struct {
	KeyId              string
	IncludeKeyMaterial string
	listInput
}

type rotationsListEntry struct {
	KeyId        string
	RotationDate epochTime
}

type listKeyRotationsOutput struct {
	Rotations  []rotationsListEntry
	NextMarker string `json:",omitempty"`
	Truncated  bool
}

type keyPolicyInput struct {
	KeyId                          string
	PolicyName                     *string
	Policy                         *string
	BypassPolicyLockoutSafetyCheck bool
}

type listKeyPoliciesInput struct {
	KeyId  string
	Limit  *int32
	Marker *string
}

type getKeyPolicyOutput struct {
	Policy     string
	PolicyName string
}

type listKeyPoliciesOutput struct {
	PolicyNames []string
	Truncated   bool
}

// recipient is the Nitro Enclaves attestation of Decrypt, GenerateDataKey,
// GenerateDataKeyPair and GenerateRandom; it is refused.
type recipient struct {
	Recipient *struct {
		KeyEncryptionAlgorithm string
		AttestationDocument    []byte
	}
}

type encryptInput struct {
	KeyId               string
	Plaintext           []byte
	EncryptionContext   map[string]string
	EncryptionAlgorithm string
	grantTokens
	dryRun
}

type encryptOutput struct {
	CiphertextBlob      []byte
	KeyId               string
	EncryptionAlgorithm string
}

type decryptInput struct {
	CiphertextBlob      []byte
	EncryptionContext   map[string]string
	KeyId               string
	EncryptionAlgorithm string
	DryRunModifiers     []string
	grantTokens
	dryRun
	recipient
}

type decryptOutput struct {
	KeyId               string
	Plaintext           []byte
	EncryptionAlgorithm string
}

type reEncryptInput struct {
	CiphertextBlob                 []byte
	SourceEncryptionContext        map[string]string
	SourceKeyId                    string
	DestinationKeyId               string
	DestinationEncryptionContext   map[string]string
	SourceEncryptionAlgorithm      string
	DestinationEncryptionAlgorithm string
	DryRunModifiers                []string
	grantTokens
	dryRun
}

type reEncryptOutput struct {
	CiphertextBlob                 []byte
	SourceKeyId                    string
	KeyId                          string
	SourceEncryptionAlgorithm      string
	DestinationEncryptionAlgorithm string
}

type generateDataKeyInput struct {
	KeyId             string
	EncryptionContext map[string]string
	NumberOfBytes     *int32
	KeySpec           string
	grantTokens
	dryRun
	recipient
}

type generateDataKeyOutput struct {
	CiphertextBlob []byte
	Plaintext      []byte `json:",omitempty"`
	KeyId          string
}

type generateDataKeyPairInput struct {
	KeyId             string
	EncryptionContext map[string]string
	KeyPairSpec       string
	grantTokens
	dryRun
	recipient
}

type generateDataKeyPairOutput struct {
	PrivateKeyCiphertextBlob []byte
	PrivateKeyPlaintext      []byte `json:",omitempty"`
	PublicKey                []byte
	KeyId                    string
	KeyPairSpec              string
}

type getPublicKeyOutput struct {
	KeyId                 string
	PublicKey             []byte
	CustomerMasterKeySpec string
	KeySpec               string
	KeyUsage              string
	EncryptionAlgorithms  []string `json:",omitempty"`
	SigningAlgorithms     []string `json:",omitempty"`
}

type signInput struct {
	KeyId            string
	Message          []byte
	MessageType      string
	SigningAlgorithm string
	grantTokens
	dryRun
}

type signOutput struct {
	KeyId            string
	Signature        []byte
	SigningAlgorithm string
}

type verifyInput struct {
	KeyId            string
	Message          []byte
	MessageType      string
	Signature        []byte
	SigningAlgorithm string
	grantTokens
	dryRun
}

type verifyOutput struct {
	KeyId            string
	SignatureValid   bool
	SigningAlgorithm string
}

type macInput struct {
	KeyId        string
	Message      []byte
	MacAlgorithm string
	Mac          []byte
	grantTokens
	dryRun
}

type generateMacOutput struct {
	Mac          []byte
	MacAlgorithm string
	KeyId        string
}

type verifyMacOutput struct {
	KeyId        string
	MacValid     bool
	MacAlgorithm string
}

type generateRandomInput struct {
	NumberOfBytes    *int32
	CustomKeyStoreId *string
	recipient
}

type generateRandomOutput struct {
	Plaintext []byte
}
