"""The second peer: CoreWeave's tensorizer 2.12.1, plain and encrypted, on the same tensors.

Install without its dependencies (its requirement would pull another torch),
then its light ones one by one::

    .venv/bin/pip install --no-deps tensorizer==2.12.1
    .venv/bin/pip install libnacl boto3 hiredis

Its encryption is XSalsa20-Poly1305 per chunk (libsodium through libnacl),
decrypted on a thread pool. It also stores each tensor's plaintext SHA-256
in clear in the file, which a sealed format must never do (it confirms
guesses of the weights); measured here for speed only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def serialize(src: Path, plain: Path, encrypted: Path, work: Path) -> tuple[str, float, float]:
    """Write ``src``'s tensors plain and encrypted; returns (key file, plain s, encrypted s)."""
    from safetensors.torch import load_file
    from tensorizer import EncryptionParams, TensorSerializer

    tensors = load_file(str(src))
    started = time.perf_counter()
    ser = TensorSerializer(str(plain))
    ser.write_state_dict(tensors)
    ser.close()
    plain_s = time.perf_counter() - started
    params = EncryptionParams.random()
    started = time.perf_counter()
    ser = TensorSerializer(str(encrypted), encryption=params)
    ser.write_state_dict(tensors)
    ser.close()
    encrypted_s = time.perf_counter() - started
    key_file = work / "tensorizer.key"
    key_file.write_bytes(params.key)
    return str(key_file), plain_s, encrypted_s


def load(path: str, key_file: str = "", *, num_readers: int | None = None) -> dict[str, Any]:
    """Every tensor on the CPU, materialised (``lazy_load=False``), as a plain dict."""
    from tensorizer import DecryptionParams, TensorDeserializer

    encryption = DecryptionParams.from_key(Path(key_file).read_bytes()) if key_file else None
    with TensorDeserializer(
        path, device="cpu", num_readers=num_readers, encryption=encryption
    ) as deserializer:
        return dict(deserializer)
