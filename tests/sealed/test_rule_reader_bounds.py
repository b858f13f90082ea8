"""Rule: the reader's random-access calls stay inside what the header
declares: chunk indices in ``[0, chunk_count)``, entry buffers of exactly the
entry's size, byte ranges inside the payload. Anything else is refused
before a byte is decrypted.

Found by mutation testing (tests/MUTATION.md): ``index <= chunk_count``
survived, and ``read_entry_into`` had no test at all.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelseal.crypto import ContentKey
from modelseal.sealed import SealedReader, seal_path

KEY = ContentKey(bytes(range(32)))
FILES = {"a.bin": os.urandom(2500), "b.bin": os.urandom(700), "empty": b""}


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[SealedReader]:
    src = tmp_path / "model"
    src.mkdir()
    for name, data in FILES.items():
        (src / name).write_bytes(data)
    seal_path(src, tmp_path / "m.mseal", KEY, chunk_size=1024)
    r = SealedReader(tmp_path / "m.mseal", KEY)
    yield r
    r.close()


def test_chunk_indices_outside_the_file_are_refused(reader: SealedReader) -> None:
    n = reader.header.chunk_count
    assert n == 4  # 3200 bytes in 1 KiB chunks
    payload = b"".join(FILES.values())
    for i in range(n):
        assert reader.read_chunk(i) == payload[i * 1024 : (i + 1) * 1024]
    for bad in (-1, n, n + 1):
        with pytest.raises(IndexError, match="out of range"):
            reader.read_chunk(bad)


def test_read_entry_into_fills_exactly_the_entry(reader: SealedReader) -> None:
    for name, data in FILES.items():
        for buf in (bytearray(len(data)), np.empty(len(data), dtype=np.uint8)):
            reader.read_entry_into(name, buf)
            assert bytes(buf) == data
        entry = reader.header.entry(name)
        out = bytearray(len(data))
        reader.read_entry_into(entry, memoryview(out))
        assert bytes(out) == data
    for size in (len(FILES["a.bin"]) - 1, len(FILES["a.bin"]) + 1):
        with pytest.raises(ValueError, match="buffer size"):
            reader.read_entry_into("a.bin", bytearray(size))


def test_ranges_outside_the_payload_are_refused(reader: SealedReader) -> None:
    size = reader.header.payload_size
    assert reader.read_range(size - 1, 1) == FILES["b.bin"][-1:]
    assert reader.read_range(size, 0) == b""
    for offset, length in ((-1, 1), (size, 1), (size - 1, 2), (0, size + 1)):
        with pytest.raises(ValueError, match="outside the payload"):
            reader.read_range(offset, length)


def test_entry_streams_are_readable_seekable_files(reader: SealedReader) -> None:
    stream = reader.entry_stream("b.bin")
    assert stream.readable() and stream.seekable() and not stream.writable()
    assert io.BufferedReader(stream).read() == FILES["b.bin"]
    assert stream.seek(-10, io.SEEK_END) == len(FILES["b.bin"]) - 10
    assert stream.read(100) == FILES["b.bin"][-10:]
    with pytest.raises(ValueError, match="whence"):
        stream.seek(0, 7)
    with pytest.raises(ValueError, match="negative"):
        stream.seek(-1)
