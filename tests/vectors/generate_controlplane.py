"""Generate tests/vectors/controlplane-v1.json (run once; the output is checked in).

The constructions of docs/controlplane.md: license keys (Luhn mod 32 check
character), the activation salt, the device credential, the heartbeat MAC,
a signed heartbeat reply, and the server's sealed secrets and lookup hash;
with ``--lease`` only the ``heartbeat_lease`` entry (a beat asking for a
lease and the reply granting it) is (re)written, and with ``--audit-records``
only ``heartbeat_audit_records`` (a beat shipping device audit records and
the reply acknowledging them), leaving the others as checked in (the sealed
secret's nonce is random).

    .venv/bin/python tests/vectors/generate_controlplane.py [--lease | --audit-records]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from modelseal.controlplane.secretbox import SecretBox
from modelseal.crypto import PrivateKey, b64url
from modelseal.license.heartbeat import (
    HeartbeatRequest,
    HeartbeatVerdict,
    Lease,
    device_credential,
    mac_body,
    sign_reply,
)
from modelseal.license.licensekey import _check_char, activation_salt, normalize_license_key

OUT = Path(__file__).with_name("controlplane-v1.json")


def main() -> None:
    bodies = ["7KQ2M0XD9TA0RW4PHC6NBZE31", "000000000000000000000000", "ZZZZZZZZZZZZZZZZZZZZZZZZ"]
    bodies = [b[:24] for b in bodies]
    keys = [normalize_license_key(b + _check_char(b)) for b in bodies]
    kek = hashlib.sha256(b"modelseal controlplane vector kek").digest()
    jti = "lic_00112233445566778899aabb"
    credential = device_credential(kek, jti=jti)
    request = HeartbeatRequest(
        license_id=jti,
        device_id="dev-id-vector",
        nonce=b64url(bytes(range(16))),
        time=1764806400,
        calls_used=42,
        audit_head=(7, "hash-of-record-7"),
    )
    body = request.to_body()
    seed = hashlib.sha256(b"modelseal controlplane vector vendor key").digest()
    vendor = PrivateKey("ed25519", ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    reply = sign_reply(
        HeartbeatVerdict(
            code="VALID",
            server_time=1764806401,
            license_id=jti,
            device_id="dev-id-vector",
            nonce=request.nonce,
            interval=60,
        ),
        vendor,
        issuer="acme",
    )
    master = hashlib.sha256(b"modelseal controlplane vector master key").digest()
    box = SecretBox(master)
    sealed = box.seal(b"a content key of 32 bytes.......", purpose="content_key", row="mdl_1")
    OUT.write_text(
        json.dumps(
            {
                "license_keys": [
                    {"key": k, "activation_salt": b64url(activation_salt(k))} for k in keys
                ],
                "device_credential": {"kek": kek.hex(), "jti": jti, "credential": credential.hex()},
                "heartbeat_lease": lease_vector(),
                "heartbeat_audit_records": audit_records_vector(),
                "heartbeat": {
                    "credential": credential.hex(),
                    "body": body.decode(),
                    "mac": mac_body(credential, body),
                    "vendor_public_pem": vendor.public_key().to_pem().decode(),
                    "reply": reply,
                },
                "secretbox": {
                    "master_key": master.hex(),
                    "purpose": "content_key",
                    "row": "mdl_1",
                    "plaintext": b"a content key of 32 bytes.......".decode(),
                    "sealed": sealed,
                    "lookup_input": keys[0],
                    "lookup_hash": box.lookup_hash(keys[0]),
                },
            },
            indent=2,
        )
        + "\n"
    )


def lease_vector() -> dict[str, object]:
    """docs/controlplane.md, "Leases": the request's ``lease`` and the reply's ``lease`` claim."""
    kek = hashlib.sha256(b"modelseal controlplane vector kek").digest()
    jti = "lic_00112233445566778899aabb"
    credential = device_credential(kek, jti=jti)
    request = HeartbeatRequest(
        license_id=jti,
        device_id="dev-id-vector",
        nonce=b64url(bytes(range(16, 32))),
        time=1764806460,
        calls_used=42,
        audit_head=(9, "hash-of-record-9"),
        lease=1000,
    )
    body = request.to_body()
    seed = hashlib.sha256(b"modelseal controlplane vector vendor key").digest()
    vendor = PrivateKey("ed25519", ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    reply = sign_reply(
        HeartbeatVerdict(
            code="VALID",
            server_time=1764806461,
            license_id=jti,
            device_id="dev-id-vector",
            nonce=request.nonce,
            interval=60,
            lease=Lease(start=42, end=1042, exp=1764806461 + 3600),
        ),
        vendor,
        issuer="acme",
    )
    return {
        "credential": credential.hex(),
        "body": body.decode(),
        "mac": mac_body(credential, body),
        "vendor_public_pem": vendor.public_key().to_pem().decode(),
        "reply": reply,
    }


def audit_records_vector() -> dict[str, object]:
    """docs/controlplane.md, "Shipped audit records": a refusal whole, a heartbeat as its link."""
    from modelseal.guard.audit import genesis_hash, record_hash

    kek = hashlib.sha256(b"modelseal controlplane vector kek").digest()
    jti = "lic_00112233445566778899aabb"
    credential = device_credential(kek, jti=jti)
    refused: dict[str, object] = {
        "seq": 0,
        "ts": "2026-12-04T00:00:00.000Z",
        "event": "refused",
        "reason": "feature_missing",
        "data": {"feature": "ocr-pro", "also_refused_since_last_record": 0},
        "prev": genesis_hash(None),
    }
    refused["hash"] = record_hash(refused)
    heartbeat: dict[str, object] = {
        "seq": 1,
        "ts": "2026-12-04T00:01:00.000Z",
        "event": "heartbeat",
        "reason": None,
        "data": {"code": "VALID"},
        "prev": refused["hash"],
    }
    heartbeat["hash"] = record_hash(heartbeat)
    link = {k: heartbeat[k] for k in ("seq", "prev", "hash")}
    request = HeartbeatRequest(
        license_id=jti,
        device_id="dev-id-vector",
        nonce=b64url(bytes(range(32, 48))),
        time=1764806520,
        calls_used=42,
        audit_head=(1, str(heartbeat["hash"])),
        audit_records=(refused, link),
    )
    body = request.to_body()
    seed = hashlib.sha256(b"modelseal controlplane vector vendor key").digest()
    vendor = PrivateKey("ed25519", ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    reply = sign_reply(
        HeartbeatVerdict(
            code="VALID",
            server_time=1764806521,
            license_id=jti,
            device_id="dev-id-vector",
            nonce=request.nonce,
            interval=60,
            audit_ack=1,
        ),
        vendor,
        issuer="acme",
    )
    return {
        "credential": credential.hex(),
        "body": body.decode(),
        "mac": mac_body(credential, body),
        "vendor_public_pem": vendor.public_key().to_pem().decode(),
        "reply": reply,
    }


if __name__ == "__main__":
    if "--audit-records" in sys.argv[1:]:
        vectors = json.loads(OUT.read_text())
        vectors["heartbeat_audit_records"] = audit_records_vector()
        OUT.write_text(json.dumps(vectors, indent=2) + "\n")
    elif "--lease" in sys.argv[1:]:
        vectors = json.loads(OUT.read_text())
        vectors["heartbeat_lease"] = lease_vector()
        OUT.write_text(json.dumps(vectors, indent=2) + "\n")
    else:
        main()
