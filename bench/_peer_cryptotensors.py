"""The peer: cryptotensors 0.2.3 (encrypted safetensors), on the same file.

Keys are local JWKs (AES-256-GCM content key, Ed25519 signing key, which it
requires), registered with its direct key provider; no network, no $HOME.
Its key bytes are standard base64 with padding, not base64url.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encrypt(src: Path, dst: Path, work: Path) -> str:
    """Encrypt ``src`` into ``dst``; returns the path of the key file for loading."""
    import cryptotensors
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptotensors.torch import save_file
    from safetensors.torch import load_file

    sk = ed25519.Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    enc_key = {"kty": "oct", "alg": "aes256gcm", "kid": "bench-enc", "k": _b64(os.urandom(32))}
    sign_key = {
        "kty": "okp",
        "alg": "ed25519",
        "kid": "bench-sign",
        "d": _b64(
            sk.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        ),
        "x": _b64(sk.public_key().public_bytes(raw, serialization.PublicFormat.Raw)),
    }
    cfg = cryptotensors.SerializeCryptoConfig(enc_key=enc_key, sign_key=sign_key).to_dict()
    started = time.perf_counter()
    save_file(load_file(str(src)), str(dst), config=cfg)
    elapsed = time.perf_counter() - started
    keys = work / "cryptotensors-keys.json"
    public_sign = {k: v for k, v in sign_key.items() if k != "d"}
    keys.write_text(json.dumps({"keys": [enc_key, public_sign], "encrypt_seconds": elapsed}))
    return str(keys)


def _register(key_file: str) -> None:
    import cryptotensors

    cryptotensors.register_direct_key_provider(keys=json.loads(Path(key_file).read_text())["keys"])


def load_all(path: str, key_file: str) -> Any:
    from cryptotensors.torch import load_file

    _register(key_file)
    return load_file(path)


def load_slice(path: str, key_file: str, name: str) -> tuple[Any, float]:
    """One row of one tensor from a fresh handle; returns (slice, start time after open)."""
    import cryptotensors

    _register(key_file)
    with cryptotensors.safe_open(path, framework="pt") as f:
        started = time.perf_counter()
        return f.get_slice(name)[0:1], started
