"""Rule: opening a sealed file checks the header MAC before anything is handed
out (docs/format.md): a reader that exists has an authentic header.

Most header damage is also caught later, because the chunk AAD hashes the
header and its MAC. These cases are the ones where the header MAC alone
decides: nothing (or no chunk) is decrypted, so only the MAC check can tell
the caller that ``header`` (model id, entries, framework) was forged.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

import modelseal
from modelseal.crypto import ContentKey
from modelseal.errors import DecryptionError, HeaderIntegrityError
from modelseal.sealed import SealedReader, read_header, seal_path
from modelseal.sealed.format import MAC_SIZE, PREAMBLE_SIZE

KEY = ContentKey(bytes(range(32)))


def _sealed(tmp_path: Path, size: int) -> tuple[Path, bytes, int]:
    (tmp_path / "m.bin").write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    seal_path(tmp_path / "m.bin", tmp_path / "m.mseal", KEY, chunk_size=1024, model_id="acme/m")
    blob = (tmp_path / "m.mseal").read_bytes()
    (hlen,) = struct.unpack(">I", blob[12:16])
    return tmp_path / "m.mseal", blob, PREAMBLE_SIZE + hlen  # offset of the MAC


@pytest.mark.parametrize("size", [0, 10, 3000])
@pytest.mark.parametrize("position", [0, MAC_SIZE // 2, MAC_SIZE - 1])
def test_a_flipped_mac_refuses_the_open_itself(tmp_path: Path, size: int, position: int) -> None:
    path, blob, mac_at = _sealed(tmp_path, size)
    bad = bytearray(blob)
    bad[mac_at + position] ^= 0x01
    path.write_bytes(bytes(bad))
    assert read_header(path).model_id == "acme/m"  # the header itself is untouched
    with pytest.raises(HeaderIntegrityError):
        SealedReader(path, KEY)
    with pytest.raises(HeaderIntegrityError):
        modelseal.open(path, key=KEY)
    with pytest.raises(HeaderIntegrityError):
        modelseal.verify(path, key=KEY)


def test_a_forged_header_with_a_stale_mac_is_refused_before_any_chunk(tmp_path: Path) -> None:
    # Same-length edit of the header JSON (the model id): still parses, same
    # layout, so only the MAC can refuse it at open; the chunk AAD would only
    # notice on the first read, after the forged header had been handed out.
    path, blob, _ = _sealed(tmp_path, 3000)
    forged = blob.replace(b'"acme/m"', b'"evil/m"', 1)
    assert len(forged) == len(blob) and forged != blob
    path.write_bytes(forged)
    assert read_header(path).model_id == "evil/m"
    with pytest.raises(HeaderIntegrityError) as info:
        SealedReader(path, KEY)
    assert str(info.value) == "the header was modified (authentication code mismatch)"
    with pytest.raises(HeaderIntegrityError):
        modelseal.load(path, key=KEY, framework="bytes")


def test_the_chunk_aad_is_a_second_independent_line(tmp_path: Path) -> None:
    # Were the MAC check gone, the chunks would still refuse a header they were
    # not sealed under: the two checks are independent lines of defence.
    from modelseal.sealed.format import chunk_aad, derive_keys

    path, blob, mac_at = _sealed(tmp_path, 3000)
    with SealedReader(path, KEY) as r:
        keys = derive_keys(KEY, r.header.salt, r.header.aead)
        forged_head = blob[:mac_at].replace(b'"acme/m"', b'"evil/m"', 1)
        aad = chunk_aad(forged_head, blob[mac_at : mac_at + MAC_SIZE])
        first = blob[mac_at + MAC_SIZE : mac_at + MAC_SIZE + 1024 + 16]
        with pytest.raises(DecryptionError):
            keys.aead.decrypt(keys.nonce(0, False), first, aad)
        assert len(keys.aead.decrypt(keys.nonce(0, False), first, r._aad)) == 1024
