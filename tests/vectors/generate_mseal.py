"""Generate tests/vectors/mseal-v1.json (run once; the output is checked in).

Each vector is a complete .mseal file with its content key, the plaintext
entries and the intermediate values of the key schedule, so another
implementation can be checked step by step against docs/format-mseal.md.

    .venv/bin/python tests/vectors/generate_mseal.py
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from modelseal.crypto import ContentKey
from modelseal.sealed import seal_path
from modelseal.sealed.format import PREAMBLE_SIZE, chunk_aad, derive_keys

OUT = Path(__file__).with_name("mseal-v1.json")


def plaintext(n: int, seed: bytes) -> bytes:
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:n]


def main() -> None:
    cases = [
        ("aes-256-gcm, one file over three chunks", "aes-256-gcm", {"weights.bin": 2500}),
        ("sm4-gcm, one file over three chunks", "sm4-gcm", {"weights.bin": 2500}),
        ("aes-256-gcm, empty file", "aes-256-gcm", {"empty.bin": 0}),
        ("aes-256-gcm, exact chunk multiple", "aes-256-gcm", {"weights.bin": 2048}),
        (
            "aes-256-gcm, directory of two files",
            "aes-256-gcm",
            {"config.json": 37, "shards/model-00001.safetensors": 1500},
        ),
    ]
    vectors = []
    for i, (name, aead, files) in enumerate(cases):
        key = ContentKey(hashlib.sha256(b"modelseal vector key %d" % i).digest())
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            contents = {
                path: plaintext(size, f"{i}/{path}".encode()) for path, size in files.items()
            }
            if len(files) == 1:
                (path,) = files
                src = root / path
                src.write_bytes(contents[path])
            else:
                src = root / "model"
                for path, data in contents.items():
                    (src / path).parent.mkdir(parents=True, exist_ok=True)
                    (src / path).write_bytes(data)
            out = root / "v.mseal"
            header = seal_path(src, out, key, aead=aead, model_id=f"vector-{i}", chunk_size=1024)
            blob = out.read_bytes()
        header_len = int.from_bytes(blob[12:16], "big")
        head = blob[: PREAMBLE_SIZE + header_len]
        mac = blob[len(head) : len(head) + 32]
        keys = derive_keys(key, header.salt, aead)
        vectors.append(
            {
                "name": name,
                "content_key": key.raw().hex(),
                "content_key_id": key.key_id,
                "aead": aead,
                "mac_key": keys.mac_key.hex(),
                "nonce_prefix": keys.nonce_prefix.hex(),
                "aad": chunk_aad(head, mac).hex(),
                "chunk_count": header.chunk_count,
                "entries": {path: data.hex() for path, data in contents.items()},
                "mseal": blob.hex(),
            }
        )
    OUT.write_text(
        json.dumps({"format": "mseal", "version": 1, "vectors": vectors}, indent=1) + "\n"
    )
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
