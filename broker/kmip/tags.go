package kmip

import "github.com/hsmbroker/hsmbroker/broker/kmip/ttlv"

// KMIP tags this server reads or writes (KMIP 1.0-2.0, section 9.1.3.1).
const (
	tagActivationDate         ttlv.Tag = 0x420001
	tagBlockCipherMode        ttlv.Tag = 0x420011
	tagCryptographicParams    ttlv.Tag = 0x42002B
	tagIVCounterNonce         ttlv.Tag = 0x42003D
	tagPaddingMethod          ttlv.Tag = 0x42005F
	tagData                   ttlv.Tag = 0x4200C2
	tagAEADData               ttlv.Tag = 0x4200FE // Authenticated Encryption Additional Data (1.4)
	tagAEADTag                ttlv.Tag = 0x4200FF // Authenticated Encryption Tag (1.4)
	tagAttribute              ttlv.Tag = 0x420008
	tagAttributeIndex         ttlv.Tag = 0x420009
	tagAttributeName          ttlv.Tag = 0x42000A
	tagAttributeValue         ttlv.Tag = 0x42000B
	tagBatchCount             ttlv.Tag = 0x42000D
	tagBatchErrorContinuation ttlv.Tag = 0x42000E
	tagBatchItem              ttlv.Tag = 0x42000F
	tagCompromiseDate         ttlv.Tag = 0x420020
	tagCompromiseOccurrence   ttlv.Tag = 0x420021
	tagCryptographicAlgorithm ttlv.Tag = 0x420028
	tagCryptographicLength    ttlv.Tag = 0x42002A
	tagCryptographicUsageMask ttlv.Tag = 0x42002C
	tagDeactivationDate       ttlv.Tag = 0x42002F
	tagInitialDate            ttlv.Tag = 0x420039
	tagKey                    ttlv.Tag = 0x42003F
	tagKeyBlock               ttlv.Tag = 0x420040
	tagKeyFormatType          ttlv.Tag = 0x420042
	tagKeyMaterial            ttlv.Tag = 0x420043
	tagKeyValue               ttlv.Tag = 0x420045
	tagKeyWrappingData        ttlv.Tag = 0x420046
	tagKeyWrappingSpec        ttlv.Tag = 0x420047
	tagLastChangeDate         ttlv.Tag = 0x420048
	tagMaximumItems           ttlv.Tag = 0x42004F
	tagMaximumResponseSize    ttlv.Tag = 0x420050
	tagName                   ttlv.Tag = 0x420053
	tagNameType               ttlv.Tag = 0x420054
	tagNameValue              ttlv.Tag = 0x420055
	tagObjectGroup            ttlv.Tag = 0x420056
	tagObjectType             ttlv.Tag = 0x420057
	tagOperation              ttlv.Tag = 0x42005C
	tagOperationPolicyName    ttlv.Tag = 0x42005D
	tagProtocolVersion        ttlv.Tag = 0x420069
	tagProtocolVersionMajor   ttlv.Tag = 0x42006A
	tagProtocolVersionMinor   ttlv.Tag = 0x42006B
	tagQueryFunction          ttlv.Tag = 0x420074
	tagRequestHeader          ttlv.Tag = 0x420077
	tagRequestMessage         ttlv.Tag = 0x420078
	tagRequestPayload         ttlv.Tag = 0x420079
	tagResponseHeader         ttlv.Tag = 0x42007A
	tagResponseMessage        ttlv.Tag = 0x42007B
	tagResponsePayload        ttlv.Tag = 0x42007C
	tagResultMessage          ttlv.Tag = 0x42007D
	tagResultReason           ttlv.Tag = 0x42007E
	tagResultStatus           ttlv.Tag = 0x42007F
	tagRevocationMessage      ttlv.Tag = 0x420080
	tagRevocationReason       ttlv.Tag = 0x420081
	tagRevocationReasonCode   ttlv.Tag = 0x420082
	tagSecretData             ttlv.Tag = 0x420085
	tagSecretDataType         ttlv.Tag = 0x420086
	tagServerInformation      ttlv.Tag = 0x420088
	tagState                  ttlv.Tag = 0x42008D
	tagSymmetricKey           ttlv.Tag = 0x42008F
	tagTemplateAttribute      ttlv.Tag = 0x420091
	tagTimeStamp              ttlv.Tag = 0x420092
	tagUniqueBatchItemID      ttlv.Tag = 0x420093
	tagUniqueIdentifier       ttlv.Tag = 0x420094
	tagVendorIdentification   ttlv.Tag = 0x42009D
	tagObjectGroupMember      ttlv.Tag = 0x4200AC
	tagOriginalCreationDate   ttlv.Tag = 0x4200BC
	tagOffsetItems            ttlv.Tag = 0x4200D4
	tagSensitive              ttlv.Tag = 0x420120
	tagExtractable            ttlv.Tag = 0x420122
	tagAttributes             ttlv.Tag = 0x420125
	tagAttributeReference     ttlv.Tag = 0x42013B
	tagCurrentAttribute       ttlv.Tag = 0x42013C
	tagNewAttribute           ttlv.Tag = 0x42013D
	tagMACData                ttlv.Tag = 0x4200C6
	tagSignatureData          ttlv.Tag = 0x4200C3
	tagValidityIndicator      ttlv.Tag = 0x42009B
	tagHashingAlgorithm       ttlv.Tag = 0x420038
	tagDigitalSignatureAlg    ttlv.Tag = 0x4200AE
	tagSaltLength             ttlv.Tag = 0x420100
	tagMaskGeneratorHashing   ttlv.Tag = 0x420102
	tagLink                   ttlv.Tag = 0x42004A
	tagLinkType               ttlv.Tag = 0x42004B
	tagLinkedObjectID         ttlv.Tag = 0x42004C
	tagPublicKey              ttlv.Tag = 0x42006D
	tagPrivateKeyUID          ttlv.Tag = 0x420066
	tagPublicKeyUID           ttlv.Tag = 0x42006F
	tagCommonTemplateAttr     ttlv.Tag = 0x42001F // 1.x
	tagPrivateKeyTemplateAttr ttlv.Tag = 0x420065 // 1.x
	tagPublicKeyTemplateAttr  ttlv.Tag = 0x42006E // 1.x
	tagCommonAttributes       ttlv.Tag = 0x420126 // 2.0
	tagPrivateKeyAttributes   ttlv.Tag = 0x420127 // 2.0
	tagPublicKeyAttributes    ttlv.Tag = 0x420128 // 2.0
)

// Operations.
const (
	opCreate           uint32 = 0x01
	opCreateKeyPair    uint32 = 0x02
	opRegister         uint32 = 0x03
	opLocate           uint32 = 0x08
	opGet              uint32 = 0x0A
	opGetAttributes    uint32 = 0x0B
	opGetAttributeList uint32 = 0x0C
	opAddAttribute     uint32 = 0x0D
	opModifyAttribute  uint32 = 0x0E
	opDeleteAttribute  uint32 = 0x0F
	opActivate         uint32 = 0x12
	opRevoke           uint32 = 0x13
	opDestroy          uint32 = 0x14
	opQuery            uint32 = 0x18
	opDiscoverVersions uint32 = 0x1E
	opSetAttribute     uint32 = 0x31
	opEncrypt          uint32 = 0x1F
	opDecrypt          uint32 = 0x20
	opMAC              uint32 = 0x23
	opSign             uint32 = 0x21
	opSignatureVerify  uint32 = 0x22
)

// opNames are the actions key policies and audit lines name ("kmip:Get").
var opNames = map[uint32]string{
	opCreate: "Create", opRegister: "Register", opLocate: "Locate", opGet: "Get",
	opGetAttributes: "GetAttributes", opGetAttributeList: "GetAttributeList", opAddAttribute: "AddAttribute",
	opModifyAttribute: "ModifyAttribute", opDeleteAttribute: "DeleteAttribute", opActivate: "Activate",
	opRevoke: "Revoke", opDestroy: "Destroy", opQuery: "Query", opDiscoverVersions: "DiscoverVersions",
	opSetAttribute: "SetAttribute", opEncrypt: "Encrypt", opDecrypt: "Decrypt",
	opMAC: "MAC", opCreateKeyPair: "CreateKeyPair", opSign: "Sign", opSignatureVerify: "SignatureVerify",
}

// Result statuses and reasons.
const (
	statusSuccess         uint32 = 0
	statusOperationFailed uint32 = 1

	reasonItemNotFound          uint32 = 0x01
	reasonResponseTooLarge      uint32 = 0x02
	reasonAuthenticationFailed  uint32 = 0x03
	reasonInvalidMessage        uint32 = 0x04
	reasonOperationNotSupported uint32 = 0x05
	reasonMissingData           uint32 = 0x06
	reasonInvalidField          uint32 = 0x07
	reasonFeatureNotSupported   uint32 = 0x08
	reasonCryptographicFailure  uint32 = 0x0A
	reasonIllegalOperation      uint32 = 0x0B
	reasonPermissionDenied      uint32 = 0x0C
	reasonIndexOutOfBounds      uint32 = 0x0E
	reasonKeyFormatNotSupported uint32 = 0x10
	reasonGeneralFailure        uint32 = 0x100
	reasonWrongLifecycleState   uint32 = 0x43 // KMIP 2.0; 1.x servers answer Permission Denied
)

// Object types, key formats, name types.
const (
	objectSymmetricKey uint32 = 2
	objectSecretData   uint32 = 7
	objectPublicKey    uint32 = 3
	objectPrivateKey   uint32 = 4

	formatRaw                  uint32 = 1
	formatOpaque               uint32 = 2
	formatTransparentSymmetric uint32 = 7
	formatX509                 uint32 = 5

	linkPublicKey  uint32 = 0x102
	linkPrivateKey uint32 = 0x103

	nameTypeText uint32 = 1

	queryOperations  uint32 = 1
	queryObjects     uint32 = 2
	queryServerInfo  uint32 = 3
	revocationUnspec uint32 = 1
)
