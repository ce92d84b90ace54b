"""Drives hsmbroker's KMIP server with PyKMIP's ProxyKmipClient.

Usage: pykmip_client.py HOST PORT CERT KEY CA SCENARIO [VERSION]
Prints one JSON object: what each step saw. Any exception fails the run
(exit status 1) with the step that raised it.
"""
import json
import os
import sys
import traceback

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kmip.core import enums
from kmip.core import objects as cobjects
from kmip.core.factories import attributes as af
from kmip.pie import client as pclient
from kmip.pie import factory as pfactory
from kmip.pie import objects

VERSIONS = {
    "1.0": enums.KMIPVersion.KMIP_1_0, "1.1": enums.KMIPVersion.KMIP_1_1,
    "1.2": enums.KMIPVersion.KMIP_1_2, "1.3": enums.KMIPVersion.KMIP_1_3,
    "1.4": enums.KMIPVersion.KMIP_1_4, "2.0": enums.KMIPVersion.KMIP_2_0,
}
F = af.AttributeFactory()
ENC_DEC = [enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT]


def client(args, version):
    c = pclient.ProxyKmipClient(hostname=args[0], port=int(args[1]), cert=args[2], key=args[3], ca=args[4],
                                config_file=os.devnull, kmip_version=VERSIONS[version])
    c.open()
    return c


def register_in_group(c, material, name, group):
    """Register a symmetric key with a Name and an Object Group (the pie
    client's register cannot set a group, so this goes through its proxy)."""
    key = objects.SymmetricKey(enums.CryptographicAlgorithm.AES, len(material) * 8, material)
    secret = pfactory.ObjectFactory().convert(key)
    tmpl = cobjects.TemplateAttribute(attributes=[
        F.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_USAGE_MASK, ENC_DEC),
        F.create_attribute(enums.AttributeType.NAME, name),
        F.create_attribute(enums.AttributeType.OBJECT_GROUP, group),
    ])
    r = c.proxy.register(enums.ObjectType.SYMMETRIC_KEY, tmpl, secret)
    if r.result_status.value != enums.ResultStatus.SUCCESS:
        raise RuntimeError("register: %s %s" % (r.result_reason, r.result_message))
    return r.uuid


def attrs(c, uid, names=None):
    _, got = c.get_attributes(uid, names)
    out = {}
    for a in got:
        v = a.attribute_value
        if hasattr(v, "name_value"):
            v = v.name_value.value
        elif hasattr(v, "value"):
            v = v.value
        if hasattr(v, "name"):
            v = v.name
        out.setdefault(a.attribute_name.value, []).append(v if isinstance(v, (str, int, bool)) else str(v))
    return out


def failure(fn):
    try:
        fn()
    except Exception as e:  # PyKMIP raises KmipOperationFailure with the reason
        return getattr(e, "reason", None).name if getattr(e, "reason", None) else type(e).__name__
    return "no failure"


def ops(args, version):
    """Every operation PyKMIP's pie client offers that the server serves."""
    out = {"version": version}
    c = client(args, version)
    sizes = {}
    for bits in (128, 192, 256):
        uid = c.create(enums.CryptographicAlgorithm.AES, bits, name="ops-aes-%d" % bits, cryptographic_usage_mask=ENC_DEC)
        sizes[str(bits)] = len(c.get(uid).value)
    out["create_sizes"] = sizes
    material = os.urandom(32)
    uid = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256, material, masks=ENC_DEC, name="ops-reg"))
    secret = c.register(objects.SecretData(b"a password", enums.SecretDataType.PASSWORD, name="ops-secret"))
    out["get_matches"] = c.get(uid).value == material
    out["secret_matches"] = c.get(secret).value == b"a password"
    out["state_before"] = attrs(c, uid, ["State"])["State"]
    c.activate(uid)
    out["state_after"] = attrs(c, uid, ["State"])["State"]
    out["attribute_list"] = sorted(c.get_attribute_list(uid))
    out["all_attributes"] = sorted(attrs(c, uid).keys())
    out["locate_name"] = c.locate(attributes=[F.create_attribute(enums.AttributeType.NAME, "ops-reg")]) == [uid]
    out["locate_active_keys"] = len(c.locate(attributes=[
        F.create_attribute(enums.AttributeType.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
        F.create_attribute(enums.AttributeType.STATE, enums.State.ACTIVE)]))
    every = c.locate()
    out["locate_all"] = len(every)
    out["locate_page"] = c.locate(maximum_items=2, offset_items=1) == sorted(every)[1:3] if version >= "1.3" else "n/a"
    out["locate_max"] = len(c.locate(maximum_items=2))
    cbc = {"cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
           "block_cipher_mode": enums.BlockCipherMode.CBC, "padding_method": enums.PaddingMethod.PKCS5}
    msg = b"a message of some length"
    ct, iv = c.encrypt(msg, uid=uid, cryptographic_parameters=cbc)
    out["decrypt_round_trip"] = c.decrypt(ct, uid=uid, cryptographic_parameters=cbc, iv_counter_nonce=iv) == msg
    dec = Cipher(algorithms.AES(material), modes.CBC(iv)).decryptor()
    unpad = padding.PKCS7(128).unpadder()
    out["encrypt_is_aes_cbc"] = unpad.update(dec.update(ct) + dec.finalize()) + unpad.finalize() == msg
    out["get_missing"] = failure(lambda: c.get("00000000-0000-4000-8000-000000000000"))
    out["destroy_active"] = failure(lambda: c.destroy(uid))
    c.revoke(enums.RevocationReasonCode.CESSATION_OF_OPERATION, uid)
    out["state_revoked"] = attrs(c, uid, ["State"])["State"]
    c.destroy(uid)
    out["get_destroyed"] = failure(lambda: c.get(uid))
    out["create_dsa"] = failure(lambda: c.create_key_pair(enums.CryptographicAlgorithm.DSA, 2048))
    out["encrypt_secret"] = failure(lambda: c.encrypt(b"data", uid=secret, cryptographic_parameters=cbc))
    q = c.proxy.query(query_functions=[enums.QueryFunction.QUERY_OPERATIONS, enums.QueryFunction.QUERY_OBJECTS])
    out["query_operations"] = len(q.operations)
    dv = c.proxy.discover_versions()
    out["discover_versions"] = ["%d.%d" % (v.major, v.minor) for v in dv.protocol_versions]
    c.close()
    return out


def percona(args, _):
    """Percona Server's keyring_kmip: Register 1.4 + Activate with a group,
    Locate by group in 1.0 on the same connection, Get, Get Attributes
    Name, Revoke + Destroy."""
    out = {}
    c = client(args, "1.4")
    material = os.urandom(32)
    uid = register_in_group(c, material, "percona-key", "percona-keyring")
    c.activate(uid)
    c.kmip_version = enums.KMIPVersion.KMIP_1_0  # same connection, older version
    found = c.locate(attributes=[F.create_attribute(enums.AttributeType.OBJECT_GROUP, "percona-keyring")])
    out["locate_group"] = found == [uid]
    c.kmip_version = enums.KMIPVersion.KMIP_1_4
    out["get"] = c.get(uid).value == material
    out["name"] = attrs(c, uid, ["Name"])["Name"]
    c.revoke(enums.RevocationReasonCode.UNSPECIFIED, uid)
    c.destroy(uid)
    c.kmip_version = enums.KMIPVersion.KMIP_1_0
    out["after_destroy"] = c.locate(attributes=[F.create_attribute(enums.AttributeType.OBJECT_GROUP, "percona-keyring")])
    c.close()
    return out


def pgtde(args, version):
    """pg_tde: Register with a Name, Locate by type and Name (at most 16)
    returns exactly one, Get."""
    out = {}
    c = client(args, version)
    material = os.urandom(16)
    uid = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 128, material, name="pg_tde_principal_key"))
    found = c.locate(maximum_items=16, attributes=[
        F.create_attribute(enums.AttributeType.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
        F.create_attribute(enums.AttributeType.NAME, "pg_tde_principal_key")])
    out["locate"] = found == [uid]
    out["get"] = c.get(found[0]).value == material
    c.close()
    return out


def mongodb(args, version):
    """MongoDB: Register, Activate, Get, Get Attributes State; a missing key
    is Item Not Found."""
    out = {}
    c = client(args, version)
    material = os.urandom(32)
    uid = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256, material))
    c.activate(uid)
    out["get"] = c.get(uid).value == material
    out["state"] = attrs(c, uid, ["State"])["State"]
    out["missing"] = failure(lambda: c.get_attributes("11111111-1111-4111-8111-111111111111", ["State"]))
    c.close()
    return out


def denied(args, version):
    """A client whose role the policy does not admit."""
    c = client(args, version)
    out = {"register": failure(lambda: c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 128, os.urandom(16))))}
    c.close()
    return out


def store(args, version):
    """Register and activate a named key; print its id and material."""
    c = client(args, version)
    material = os.urandom(32)
    uid = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256, material, name="cluster-key"))
    c.activate(uid)
    c.close()
    return {"id": uid, "material": material.hex()}


def fetch(args, version):
    """Locate the named key and Get it; print what was found."""
    c = client(args, version)
    found = c.locate(attributes=[F.create_attribute(enums.AttributeType.NAME, "cluster-key")])
    out = {"ids": found, "material": c.get(found[0]).value.hex() if found else ""}
    c.close()
    return out


def mac(args, version):
    """MAC with registered HMAC keys and a secret, compared with Python's
    hmac; what the usage mask and lifecycle refuse."""
    import hashlib
    import hmac
    out = {}
    c = client(args, version)
    msg = b"data to authenticate"
    gen = [enums.CryptographicUsageMask.MAC_GENERATE]
    for alg, h, n in ((enums.CryptographicAlgorithm.HMAC_SHA256, hashlib.sha256, 32),
                      (enums.CryptographicAlgorithm.HMAC_SHA384, hashlib.sha384, 48),
                      (enums.CryptographicAlgorithm.HMAC_SHA512, hashlib.sha512, 64)):
        material = os.urandom(n)
        uid = c.register(objects.SymmetricKey(alg, n * 8, material, masks=gen))
        if alg == enums.CryptographicAlgorithm.HMAC_SHA256:
            out["pre_active"] = failure(lambda: c.mac(msg, uid, alg))
        c.activate(uid)
        got_uid, tag = c.mac(msg, uid, alg)
        out[alg.name] = got_uid == uid and tag == hmac.new(material, msg, h).digest()
        if alg == enums.CryptographicAlgorithm.HMAC_SHA256:
            out["other_algorithm"] = failure(lambda: c.mac(msg, uid, enums.CryptographicAlgorithm.HMAC_SHA512))
    secret = os.urandom(40)
    sid = c.register(objects.SecretData(secret, enums.SecretDataType.SEED, masks=gen))
    c.activate(sid)
    out["secret_sha256"] = c.mac(msg, sid, enums.CryptographicAlgorithm.HMAC_SHA256)[1] == hmac.new(secret, msg, hashlib.sha256).digest()
    out["secret_sha1"] = failure(lambda: c.mac(msg, sid, enums.CryptographicAlgorithm.HMAC_SHA1))
    out["secret_short_for_512"] = failure(lambda: c.mac(msg, sid, enums.CryptographicAlgorithm.HMAC_SHA512))
    enc = c.register(objects.SymmetricKey(enums.CryptographicAlgorithm.AES, 256, os.urandom(32), masks=ENC_DEC))
    c.activate(enc)
    out["encrypt_only_key"] = failure(lambda: c.mac(msg, enc, enums.CryptographicAlgorithm.HMAC_SHA256))
    c.close()
    return out


def pairs(args, version):
    """Create Key Pair (RSA 2048/3072, EC P-256/P-384), Get of each half,
    Sign in the server checked with the cryptography package, Signature
    Verify of good and tampered signatures."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric import padding as apad
    out = {}
    c = client(args, version)
    msg = b"a message to sign"
    A, H, P, D = enums.CryptographicAlgorithm, enums.HashingAlgorithm, enums.PaddingMethod, enums.DigitalSignatureAlgorithm
    for alg, bits in ((A.RSA, 2048), (A.RSA, 3072), (A.ECDSA, 256), (A.ECDSA, 384)):
        name = "%s_%d" % (alg.name, bits)
        r = {}
        pub, priv = c.create_key_pair(alg, bits, public_name=name + "-pub", private_name=name + "-priv",
                                      public_usage_mask=[enums.CryptographicUsageMask.VERIFY],
                                      private_usage_mask=[enums.CryptographicUsageMask.SIGN])
        r["get_private"] = failure(lambda: c.get(priv))
        key = serialization.load_der_public_key(c.get(pub).value)
        r["public_bits"] = key.key_size if alg == A.RSA else key.curve.key_size
        # PyKMIP cannot decode a Link value; the list names it, and Get
        # Attributes without names (which leaves Link out) still works.
        r["attribute_list_has_link"] = "Link" in c.get_attribute_list(priv) if version < "2.0" else "n/a"
        r["private_attrs"] = {k: v for k, v in attrs(c, priv).items() if k in ("Object Type", "Cryptographic Algorithm", "Cryptographic Length", "Name")}
        r["sign_pre_active"] = failure(lambda: c.sign(msg, priv))
        c.activate(priv)
        c.activate(pub)
        r["sign_with_public"] = failure(lambda: c.sign(msg, pub))
        if alg == A.RSA:
            schemes = {
                "pkcs1": ({"cryptographic_algorithm": A.RSA, "padding_method": P.PKCS1v15, "hashing_algorithm": H.SHA_256},
                          lambda s, m: key.verify(s, m, apad.PKCS1v15(), hashes.SHA256())),
                "pkcs1_dsa": ({"digital_signature_algorithm": D.SHA256_WITH_RSA_ENCRYPTION},
                              lambda s, m: key.verify(s, m, apad.PKCS1v15(), hashes.SHA256())),
                "pss": ({"cryptographic_algorithm": A.RSA, "padding_method": P.PSS, "hashing_algorithm": H.SHA_256},
                        lambda s, m: key.verify(s, m, apad.PSS(apad.MGF1(hashes.SHA256()), 32), hashes.SHA256())),
            }
        else:
            h, dsa = (hashes.SHA256, D.ECDSA_WITH_SHA256) if bits == 256 else (hashes.SHA384, D.ECDSA_WITH_SHA384)
            schemes = {"ecdsa": ({"digital_signature_algorithm": dsa}, lambda s, m: key.verify(s, m, ec.ECDSA(h())))}
        for sname, (params, check) in schemes.items():
            sig = c.sign(msg, priv, params)
            try:
                check(sig, msg)
                r[sname + "_checks"] = True
            except Exception as e:
                r[sname + "_checks"] = repr(e)
            r[sname + "_verify"] = c.signature_verify(msg, sig, pub, params).name
            r[sname + "_verify_tampered"] = c.signature_verify(msg + b"!", sig, pub, params).name
        out[name] = r
    c.close()
    return out


def lifecycle(args, version):
    """Register of AES keys of other lengths; Revoke by state and reason;
    an Activation Date in the past at Register."""
    import time
    out = {}
    c = client(args, version)
    A, R = enums.CryptographicAlgorithm, enums.RevocationReasonCode
    out["register_aes"] = {str(n): failure(lambda: c.register(objects.SymmetricKey(A.AES, n * 8, os.urandom(n))))
                           for n in (1, 15, 17, 31, 33, 64, 4096)}
    out["register_aes_ok"] = failure(lambda: c.register(objects.SymmetricKey(A.AES, 192, os.urandom(24))))

    def key():
        return c.register(objects.SymmetricKey(A.AES, 256, os.urandom(32), masks=ENC_DEC))

    pre = key()
    out["pre_active_cessation"] = failure(lambda: c.revoke(R.CESSATION_OF_OPERATION, pre))
    out["pre_active_after"] = attrs(c, pre, ["State"])["State"]
    c.revoke(R.KEY_COMPROMISE, pre)
    out["pre_active_compromise"] = attrs(c, pre, ["State"])["State"]
    out["compromised_cessation"] = failure(lambda: c.revoke(R.CESSATION_OF_OPERATION, pre))
    out["compromised_get"] = failure(lambda: c.get(pre))
    act = key()
    c.activate(act)
    c.revoke(R.CESSATION_OF_OPERATION, act)
    out["active_cessation"] = attrs(c, act, ["State"])["State"]
    out["deactivated_cessation"] = failure(lambda: c.revoke(R.CESSATION_OF_OPERATION, act))
    c.revoke(R.KEY_COMPROMISE, act)
    out["deactivated_compromise"] = attrs(c, act, ["State"])["State"]

    material = os.urandom(32)
    secret = pfactory.ObjectFactory().convert(objects.SymmetricKey(A.AES, 256, material))
    tmpl = cobjects.TemplateAttribute(attributes=[
        F.create_attribute(enums.AttributeType.CRYPTOGRAPHIC_USAGE_MASK, ENC_DEC),
        F.create_attribute(enums.AttributeType.ACTIVATION_DATE, int(time.time()) - 3600),
    ])
    r = c.proxy.register(enums.ObjectType.SYMMETRIC_KEY, tmpl, secret)
    if r.result_status.value != enums.ResultStatus.SUCCESS:
        raise RuntimeError("register: %s %s" % (r.result_reason, r.result_message))
    out["past_activation_date"] = attrs(c, r.uuid, ["State"])["State"]
    c.close()
    return out


SCENARIOS = {"lifecycle": lifecycle, "pairs": pairs, "mac": mac, "store": store, "fetch": fetch, "ops": ops, "percona": percona, "pgtde": pgtde, "mongodb": mongodb, "denied": denied}

if __name__ == "__main__":
    a = sys.argv[1:]
    try:
        print(json.dumps(SCENARIOS[a[5]](a[:5], a[6] if len(a) > 6 else "1.2"), sort_keys=True))
    except Exception:
        traceback.print_exc()
        sys.exit(1)
