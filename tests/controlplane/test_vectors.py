"""tests/vectors/controlplane-v1.json against independent computations (hashlib, cryptography)."""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelseal.crypto import b64url, b64url_decode, load_public_key
from modelseal.license import TrustStore
from modelseal.license.heartbeat import verify_reply
from modelseal.license.licensekey import ALPHABET, normalize_license_key
from tests.conftest import load_vectors

V = load_vectors("controlplane-v1.json")


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=info).derive(ikm)


def _luhn32_ok(text: str) -> bool:
    """Luhn mod 32 written out from the textbook definition (check char included)."""
    total, double = 0, False
    for char in reversed(text):
        value = ALPHABET.index(char)
        if double:
            value *= 2
            value = value // 32 + value % 32
        total += value
        double = not double
    return total % 32 == 0


def test_license_keys_and_activation_salts() -> None:
    for entry in V["license_keys"]:
        raw = entry["key"].replace("-", "")
        assert _luhn32_ok(raw)
        assert normalize_license_key(entry["key"]) == entry["key"]
        salt = _hkdf(raw.encode(), b"modelseal/device/v2/activation-salt")
        assert b64url(salt) == entry["activation_salt"]


def test_device_credential() -> None:
    v = V["device_credential"]
    info = b"modelseal/license/v1/heartbeat/" + v["jti"].encode()
    assert _hkdf(bytes.fromhex(v["kek"]), info).hex() == v["credential"]


def test_heartbeat_mac_and_reply() -> None:
    v = V["heartbeat"]
    mac = hmac.new(
        bytes.fromhex(v["credential"]),
        b"modelseal/heartbeat/v1\x00" + v["body"].encode(),
        hashlib.sha256,
    ).digest()
    assert b64url(mac) == v["mac"]
    body = v["body"]
    trust = TrustStore([load_public_key(v["vendor_public_pem"].encode())])
    verdict = verify_reply(
        v["reply"],
        trust,
        license_id="lic_00112233445566778899aabb",
        device_id="dev-id-vector",
        nonce=b64url(bytes(range(16))),
        issuer="acme",
    )
    assert verdict.code == "VALID" and verdict.server_time == 1764806401
    assert '"calls_used":42' in body


def test_secretbox() -> None:
    v = V["secretbox"]
    master = bytes.fromhex(v["master_key"])
    key = _hkdf(master, b"modelseal/cp/box/" + v["purpose"].encode())
    blob = b64url_decode(v["sealed"].removeprefix("v1."))
    plain = AESGCM(key).decrypt(blob[:12], blob[12:], v["row"].encode())
    assert plain.decode() == v["plaintext"]
    lookup = _hkdf(master, b"modelseal/cp/lookup")
    assert (
        hmac.new(lookup, v["lookup_input"].encode(), hashlib.sha256).hexdigest() == v["lookup_hash"]
    )


def test_heartbeat_lease_request_and_reply() -> None:
    """docs/controlplane.md, "Leases", checked with hashlib, json and cryptography alone."""
    import json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from modelseal.license.heartbeat import HeartbeatRequest, Lease

    v = V["heartbeat_lease"]
    body = v["body"].encode()
    mac = hmac.new(
        bytes.fromhex(v["credential"]), b"modelseal/heartbeat/v1\x00" + body, hashlib.sha256
    ).digest()
    assert b64url(mac) == v["mac"]
    parsed = json.loads(body)
    assert parsed["lease"] == 1000 and parsed["calls_used"] == 42
    # canonical: sorted keys, no spaces; the lease key is only present when asked for
    assert body == json.dumps(parsed, separators=(",", ":"), sort_keys=True).encode()
    assert HeartbeatRequest.from_body(body).lease == 1000
    head, payload, signature = v["reply"].split(".")
    public = load_pem_public_key(v["vendor_public_pem"].encode())
    assert isinstance(public, Ed25519PublicKey)
    public.verify(b64url_decode(signature), f"{head}.{payload}".encode())
    claims = json.loads(b64url_decode(payload))
    assert claims["lease"] == {"start": 42, "end": 1042, "exp": claims["time"] + 3600}
    assert claims["nonce"] == parsed["nonce"]  # bound to the request like every reply
    trust = TrustStore([load_public_key(v["vendor_public_pem"].encode())])
    verdict = verify_reply(
        v["reply"],
        trust,
        license_id=parsed["license"],
        device_id=parsed["device"],
        nonce=parsed["nonce"],
        issuer="acme",
    )
    assert verdict.lease == Lease(start=42, end=1042, exp=claims["time"] + 3600)


def test_heartbeat_shipping_audit_records_and_the_ack() -> None:
    """docs/controlplane.md, "Shipped audit records", checked with hashlib, json and
    cryptography alone: the records are under the same MAC as the rest of the body, each
    whole record hashes to its ``hash`` and each ``prev`` is the hash before it."""
    import json

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    from modelseal.license.heartbeat import HeartbeatRequest

    v = V["heartbeat_audit_records"]
    body = v["body"].encode()
    mac = hmac.new(
        bytes.fromhex(v["credential"]), b"modelseal/heartbeat/v1\x00" + body, hashlib.sha256
    ).digest()
    assert b64url(mac) == v["mac"]
    parsed = json.loads(body)
    assert body == json.dumps(parsed, separators=(",", ":"), sort_keys=True).encode()
    whole, link = parsed["audit_records"]
    assert set(link) == {"seq", "prev", "hash"} and link["seq"] == whole["seq"] + 1
    genesis = b64url(hashlib.sha256(b"modelseal/audit/v1/genesis").digest())
    assert whole["prev"] == genesis and link["prev"] == whole["hash"]
    content = {k: val for k, val in whole.items() if k != "hash"}
    canonical = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    assert b64url(hashlib.sha256(canonical).digest()) == whole["hash"]
    assert parsed["audit_head"] == [link["seq"], link["hash"]]
    assert HeartbeatRequest.from_body(body).audit_records == (whole, link)
    head, payload, signature = v["reply"].split(".")
    public = load_pem_public_key(v["vendor_public_pem"].encode())
    assert isinstance(public, Ed25519PublicKey)
    public.verify(b64url_decode(signature), f"{head}.{payload}".encode())
    claims = json.loads(b64url_decode(payload))
    assert claims["ack"] == 1 and claims["nonce"] == parsed["nonce"]
    trust = TrustStore([load_public_key(v["vendor_public_pem"].encode())])
    verdict = verify_reply(
        v["reply"],
        trust,
        license_id=parsed["license"],
        device_id=parsed["device"],
        nonce=parsed["nonce"],
        issuer="acme",
    )
    assert verdict.audit_ack == 1
