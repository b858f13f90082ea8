"""Generate tests/vectors/envelope-v1.json (run once; the output is checked in).

SM2 encryption is randomized, so the vectors are fixed by recording the
wrapped session key each one got. Each vector carries the gateway's SM2
private key (a test key), the session key, request id, the plaintext
response and the envelope, so another implementation can check unwrapping,
the AAD and the AEAD step by step against docs/envelope.md. Negative
vectors are valid envelopes with one thing changed and say why they fail.

    PYTHONPATH=src .venv/bin/python tests/vectors/generate_envelope.py
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from modelseal.crypto import generate_private_key
from modelseal.envelope.sealer import seal_with_session_key

OUT = Path(__file__).with_name("envelope-v1.json")


def main() -> None:
    gateway = generate_private_key("sm2")
    other = generate_private_key("sm2")
    cases = [
        ("sm4-gcm, JSON 200", "sm4-gcm", 200, "application/json", b'{"outputs":[]}', "req-1"),
        ("aes-256-gcm, JSON 200", "aes-256-gcm", 200, "application/json", b'{"a":1}', "r.2_x~"),
        ("sm4-gcm, error 400", "sm4-gcm", 400, "application/json", b'{"error":"bad"}', "e3"),
        ("sm4-gcm, empty body, empty request id", "sm4-gcm", 204, "", b"", ""),
        (
            "sm4-gcm, 1000 bytes",
            "sm4-gcm",
            200,
            "application/octet-stream",
            bytes(range(250)) * 4,
            "big",
        ),
    ]
    vectors = []
    for i, (name, aead, status, ctype, body, rid) in enumerate(cases):
        size = 16 if aead == "sm4-gcm" else 32
        session_key = hashlib.sha256(b"envelope session key %d" % i).digest()[:size]
        nonce = hashlib.sha256(b"envelope nonce %d" % i).digest()[:12]
        data, env = seal_with_session_key(
            gateway.public_key(),
            session_key,
            body,
            request_id=rid,
            aead=aead,
            status=status,
            content_type=ctype,
            nonce=nonce,
        )
        vectors.append(
            {
                "name": name,
                "aead": aead,
                "status": status,
                "content_type": ctype,
                "request_id": rid,
                "session_key": session_key.hex(),
                "nonce": nonce.hex(),
                "wrapped_key": env.wrapped_key.hex(),
                "header": env.header.hex(),
                "aad": env.aad(rid).hex(),
                "plaintext": body.hex(),
                "envelope": data.hex(),
            }
        )
    base = bytes.fromhex(vectors[0]["envelope"])
    rid0 = vectors[0]["request_id"]
    flipped = bytearray(base)
    flipped[-1] ^= 1
    status_changed = bytearray(base)
    status_changed[6:8] = (201).to_bytes(2, "big")
    other_data, _ = seal_with_session_key(
        other.public_key(), bytes(16), b"{}", request_id=rid0, nonce=bytes(12)
    )
    negative = [
        {
            "name": "tag flipped",
            "envelope": bytes(flipped).hex(),
            "request_id": rid0,
            "error": "EnvelopeIntegrityError",
        },
        {
            "name": "status rewritten",
            "envelope": bytes(status_changed).hex(),
            "request_id": rid0,
            "error": "EnvelopeIntegrityError",
        },
        {
            "name": "replayed for another request id",
            "envelope": base.hex(),
            "request_id": "req-2",
            "error": "EnvelopeIntegrityError",
        },
        {
            "name": "sealed for another gateway key",
            "envelope": other_data.hex(),
            "request_id": rid0,
            "error": "WrongGatewayKeyError",
        },
        {
            "name": "version 2",
            "envelope": (base[:4] + b"\x02" + base[5:]).hex(),
            "request_id": rid0,
            "error": "EnvelopeFormatError",
        },
        {
            "name": "truncated header",
            "envelope": base[:20].hex(),
            "request_id": rid0,
            "error": "EnvelopeFormatError",
        },
    ]
    doc = {
        "spec": "docs/envelope.md",
        "version": 1,
        "gateway_private_key_pem": gateway.to_pem().decode(),
        "gateway_key_id": gateway.key_id,
        "vectors": vectors,
        "negative": negative,
    }
    OUT.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
