"""Generate tests/vectors/license-v1.json (run once; the output is checked in).

A signed license with its vendor public key, the device's component values
and request salt, and the expected content key, so the whole chain of
docs/license.md (digests, secrets, share keys, Shamir, unwrapping) can be
checked against another implementation.

    .venv/bin/python tests/vectors/generate_license.py
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from modelseal.crypto import ContentKey, PrivateKey, b64url
from modelseal.device import Component, Environment, StaticSource, collect, make_request
from modelseal.license import issue_license
from modelseal.license.keydelivery import _share_key

OUT = Path(__file__).with_name("license-v1.json")


def main() -> None:
    seed = hashlib.sha256(b"modelseal license vector vendor key").digest()
    vendor = PrivateKey("ed25519", ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    cek = ContentKey(hashlib.sha256(b"modelseal license vector content key").digest())
    components = [
        ("dmi.product_uuid", "4c4c4544-0042-3510-8052-b3c04f4e3232", "strong", 3),
        ("disk.root_serial", "S4EWNX0N123456", "strong", 3),
        ("net.mac", "52:54:00:12:34:56", "strong", 2),
        ("os.hostname", "gpu-node-7", "weak", 1),
    ]
    device = collect(
        StaticSource(
            [Component(kind=k, value=v, strength=s, weight=w) for k, v, s, w in components],  # type: ignore[arg-type]
            Environment(virtualization="none", details=(), platform="linux"),
        )
    )
    salt = hashlib.sha256(b"modelseal license vector request salt").digest()
    now = datetime(2026, 11, 23, tzinfo=UTC)
    request = make_request(device, label="vector device", salt=salt, now=now)
    issued = issue_license(
        signing_key=vendor,
        issuer="vector-vendor",
        customer="Vector Customer",
        audience=["vector/model"],
        request=request,
        content_keys=[(cek, "vector/model")],
        now=now,
        valid_for=timedelta(days=3650),
        features=["ocr"],
        threshold=6,
        license_id="lic_vector_0001",
    )
    claims = issued.claims
    assert claims.keys is not None
    delivery_salt = bytes.fromhex(
        __import__("base64").urlsafe_b64decode(claims.keys.salt + "==").hex()
    )
    share_keys = {
        c.kind: b64url(
            _share_key(
                __import__("base64").urlsafe_b64decode(c.secret + "=="),
                delivery_salt,
                claims.jti,
                c.kind,
            )
        )
        for c in request.components
    }
    OUT.write_text(
        json.dumps(
            {
                "format": "modelseal-license",
                "version": 1,
                "vendor_public_key_pem": vendor.public_key().to_pem().decode(),
                "now": int(now.timestamp()),
                "request_salt": b64url(salt),
                "components": [
                    {"kind": k, "value": v, "strength": s, "weight": w} for k, v, s, w in components
                ],
                "request_components": [
                    {"kind": c.kind, "digest": c.digest, "secret": c.secret}
                    for c in request.components
                ],
                "share_keys": share_keys,
                "license": issued.token,
                "content_key": b64url(cek.raw()),
                "content_key_id": cek.key_id,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
