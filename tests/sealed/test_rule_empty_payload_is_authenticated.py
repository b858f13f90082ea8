"""Rule: an empty payload still has one (empty, last) chunk whose tag is
authenticated on every read path (docs/format.md: chunk_count is at least 1).
Without it, anyone could swap the tag of an empty sealed file, or graft an
empty file's header onto garbage, and every reader would say "fine"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import modelseal
from modelseal.crypto import ContentKey
from modelseal.errors import ChunkIntegrityError
from modelseal.sealed import SealedReader, seal_path
from modelseal.sealed.format import TAG_SIZE

KEY = ContentKey(bytes(range(32)))

READ_PATHS: dict[str, Callable[[Path], object]] = {
    "read_all": lambda p: _with(p, lambda r: r.read_all()),
    "verify": lambda p: _with(p, lambda r: r.verify()),
    "iter_chunks": lambda p: _with(p, lambda r: list(r.iter_chunks())),
    "read_range": lambda p: _with(p, lambda r: r.read_range(0, 0)),
    "read_entry": lambda p: _with(p, lambda r: r.read_entry("empty.bin")),
    "read_chunk": lambda p: _with(p, lambda r: r.read_chunk(0)),
    "entry_stream": lambda p: _with(p, lambda r: r.entry_stream("empty.bin").verify_rest()),
    "modelseal.verify": lambda p: modelseal.verify(p, key=KEY),
    "modelseal.load": lambda p: modelseal.load(p, key=KEY, framework="bytes"),
    "SealedModel.read": lambda p: _read_model(p),
}


def _with(path: Path, action: Callable[[SealedReader], object]) -> object:
    with SealedReader(path, KEY) as r:
        return action(r)


def _read_model(path: Path) -> bytes:
    with modelseal.open(path, key=KEY) as m:
        return m.read()


@pytest.fixture
def empty_sealed(tmp_path: Path) -> bytes:
    (tmp_path / "empty.bin").write_bytes(b"")
    header = seal_path(tmp_path / "empty.bin", tmp_path / "e.mseal", KEY, chunk_size=1024)
    assert (header.payload_size, header.chunk_count) == (0, 1)
    return (tmp_path / "e.mseal").read_bytes()


@pytest.mark.parametrize("read", READ_PATHS.values(), ids=READ_PATHS.keys())
def test_an_intact_empty_file_opens_on_every_path(
    tmp_path: Path, empty_sealed: bytes, read: Callable[[Path], object]
) -> None:
    read(tmp_path / "e.mseal")  # no error


@pytest.mark.parametrize("read", READ_PATHS.values(), ids=READ_PATHS.keys())
@pytest.mark.parametrize("position", [0, 5, 10, TAG_SIZE - 1])
def test_a_flipped_tag_byte_of_an_empty_file_is_caught(
    tmp_path: Path, empty_sealed: bytes, read: Callable[[Path], object], position: int
) -> None:
    bad = bytearray(empty_sealed)
    bad[len(bad) - TAG_SIZE + position] ^= 0x80
    target = tmp_path / "bad.mseal"
    target.write_bytes(bytes(bad))
    with pytest.raises(ChunkIntegrityError) as info:
        read(target)
    assert info.value.chunk_index == 0


def test_the_tag_of_another_empty_file_is_refused(tmp_path: Path, empty_sealed: bytes) -> None:
    # same key, same (empty) plaintext, different salt: the tag must not transfer
    seal_path(tmp_path / "empty.bin", tmp_path / "other.mseal", KEY, chunk_size=1024)
    other = (tmp_path / "other.mseal").read_bytes()
    assert other[-TAG_SIZE:] != empty_sealed[-TAG_SIZE:]
    (tmp_path / "graft.mseal").write_bytes(empty_sealed[:-TAG_SIZE] + other[-TAG_SIZE:])
    for read in READ_PATHS.values():
        with pytest.raises(ChunkIntegrityError):
            read(tmp_path / "graft.mseal")
