"""The checked-in .mseal vectors pin the format byte for byte (docs/format-mseal.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from modelseal.crypto import ContentKey
from modelseal.sealed import SealedReader
from modelseal.sealed.format import (
    MAC_SIZE,
    PREAMBLE_SIZE,
    TAG_SIZE,
    chunk_aad,
    derive_keys,
    header_mac,
    parse_header,
    parse_preamble,
)
from tests.conftest import load_vectors

VECTORS = load_vectors("mseal-v1.json")["vectors"]


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["name"])
def test_vector(tmp_path: Path, v: dict[str, object]) -> None:
    blob = bytes.fromhex(str(v["mseal"]))
    key = ContentKey(bytes.fromhex(str(v["content_key"])))
    assert key.key_id == v["content_key_id"]

    # spec, step by step
    header_len = parse_preamble(blob[:PREAMBLE_SIZE])
    head = blob[: PREAMBLE_SIZE + header_len]
    header = parse_header(head[PREAMBLE_SIZE:])
    mac = blob[len(head) : len(head) + MAC_SIZE]
    keys = derive_keys(key, header.salt, str(v["aead"]))
    assert keys.mac_key.hex() == v["mac_key"]
    assert keys.nonce_prefix.hex() == v["nonce_prefix"]
    assert header_mac(keys.mac_key, head) == mac
    aad = chunk_aad(head, mac)
    assert aad.hex() == v["aad"] == hashlib.sha256(head + mac).hexdigest()
    assert header.chunk_count == v["chunk_count"]

    payload = blob[len(head) + MAC_SIZE :]
    plain = b""
    pos = 0
    for i in range(header.chunk_count):
        size = header.chunk_plaintext_size(i)
        ct = payload[pos : pos + size + TAG_SIZE]
        pos += size + TAG_SIZE
        nonce = keys.nonce(i, i == header.chunk_count - 1)
        assert nonce[7:11] == i.to_bytes(4, "big")
        chunk = keys.aead.decrypt(nonce, ct, aad)
        # deterministic given key and nonce: re-encryption reproduces the file
        assert keys.aead.encrypt(nonce, chunk, aad) == ct
        plain += chunk
    assert pos == len(payload)
    entries = {k: bytes.fromhex(h) for k, h in dict(v["entries"]).items()}  # type: ignore[call-overload]
    assert plain == b"".join(entries[e.path] for e in header.entries)

    # and through the reader
    path = tmp_path / "v.mseal"
    path.write_bytes(blob)
    with SealedReader(path, key) as reader:
        for name, data in entries.items():
            assert reader.read_entry(name).tobytes() == data
