"""The reader's byte-level contract, pinned by what it returns and raises.

Rules (docs/format-mseal.md, "Reading, in order"; the reader's docstrings):

- An entry stream reads like a file of the entry's bytes, whatever the sizes
  of the reads: its position advances by what each read returned, a read at
  the end returns nothing, and reads that start or end anywhere inside a
  chunk (or span many) give exactly the entry's bytes.
- A read that fails authentication hands out nothing and does not move the
  position; the *first* integrity failure of a stream is the one it keeps
  (a framework may wrap it in its own error, and a later one must not hide
  it). ``verify_rest`` authenticates every chunk of the entry not read yet,
  including a chunk it shares with a neighbouring entry.
- Progress callbacks report exactly the payload bytes delivered: in total
  the size of what was asked for, chunk by chunk.
- Ranges are checked before anything is decrypted or sent: a negative
  offset or size, or one past the payload, is refused even when the other
  bound is fine.
- Closing a reader stops the threads it started.

Written against behaviour (bytes, errors, positions, callbacks), not the
reader's private helpers: #11 changes its internals for speed. Found by
mutation testing (tests/MUTATION.md, sealed/reader.py).
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from modelseal.crypto import TAG_SIZE, ContentKey
from modelseal.errors import ChunkIntegrityError, FormatError, TrailingDataError, TruncatedError
from modelseal.sealed import SealedReader, seal_path

KEY = ContentKey(bytes(range(7, 39)))
CHUNK = 1024
# three entries whose boundaries fall inside chunks; "b" spans six chunks
FILES = {"a.bin": os.urandom(1500), "b.bin": os.urandom(5 * CHUNK + 333), "c.bin": os.urandom(900)}


def _sealed(tmp_path: Path) -> Path:
    src = tmp_path / "model"
    src.mkdir(exist_ok=True)
    for name, data in FILES.items():
        (src / name).write_bytes(data)
    out = tmp_path / "m.mseal"
    seal_path(src, out, KEY, chunk_size=CHUNK, overwrite=True)
    return out


def _damage(path: Path, *chunks: int) -> None:
    """Flip one ciphertext byte in each of ``chunks`` (payload chunk indices)."""
    with SealedReader(path, KEY) as r:
        sealed = r.header.payload_size + r.header.chunk_count * TAG_SIZE
    payload_start = path.stat().st_size - sealed
    raw = bytearray(path.read_bytes())
    for i in chunks:
        raw[payload_start + i * (CHUNK + TAG_SIZE) + 7] ^= 0x40
    path.write_bytes(bytes(raw))


def _payload() -> bytes:
    return b"".join(FILES.values())


# --- entry streams ---------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
def test_an_entry_read_in_many_calls_is_the_entry(tmp_path: Path, workers: int) -> None:
    """Rule: the position advances by each read; any read sizes give the entry's bytes."""
    data = FILES["b.bin"]
    sizes = [1, 30, CHUNK, 2 * CHUNK - 1, 3, 700, 5000]
    with SealedReader(_sealed(tmp_path), KEY, workers=workers) as r:
        stream = r.entry_stream("b.bin")
        got = bytearray()
        for size in sizes:
            buf = bytearray(size)
            n = stream.readinto(buf)
            assert n == min(size, len(data) - len(got))
            got += buf[:n]
            assert stream.tell() == len(got)
        assert bytes(got) == data
        assert stream.readinto(bytearray(10)) == 0 and stream.tell() == len(data)
        assert stream.read(5) == b""


def test_reads_across_every_chunk_boundary_of_an_entry(tmp_path: Path) -> None:
    """Rule: a read starting or ending just before, at or after a chunk edge is exact."""
    data = FILES["b.bin"]
    entry_offset = len(FILES["a.bin"])
    with SealedReader(_sealed(tmp_path), KEY, workers=2) as r:
        stream = r.entry_stream("b.bin")
        edges = [k * CHUNK - entry_offset for k in range(2, 8)]
        for edge in [e for e in edges if 0 < e < len(data)]:
            for start in (edge - 2, edge - 1, edge, edge + 1):
                for size in (1, 2, 3, CHUNK, CHUNK + 2):
                    stream.seek(start)
                    assert stream.read(size) == data[start : start + size]
                    assert stream.tell() == min(start + size, len(data))
        stream.seek(-5, io.SEEK_END)
        stream.seek(2, io.SEEK_CUR)
        assert stream.read() == data[-3:]


def test_a_stream_read_whole_in_one_call(tmp_path: Path) -> None:
    """Rule: one read of the whole entry (whole chunks and both partial edges) is exact."""
    with SealedReader(_sealed(tmp_path), KEY, workers=2) as r:
        for name, data in FILES.items():
            stream = r.entry_stream(name)
            buf = np.empty(len(data) + 10, dtype=np.uint8)
            assert stream.readinto(buf) == len(data)
            assert buf[: len(data)].tobytes() == data


def test_a_failed_read_hands_out_nothing_and_keeps_the_first_failure(tmp_path: Path) -> None:
    """Rule: no position change on failure; ``failure`` is the first integrity error."""
    path = _sealed(tmp_path)
    _damage(path, 3, 5)  # both inside "b.bin" (payload bytes 1500-6952)
    with SealedReader(path, KEY, workers=2) as r:
        stream = r.entry_stream("b.bin")
        assert stream.failure is None
        stream.seek(3 * CHUNK - 1500 + 10)  # inside chunk 3
        with pytest.raises(ChunkIntegrityError) as first:
            stream.read(20)
        assert first.value.chunk_index == 3
        assert stream.failure is first.value
        assert stream.tell() == 3 * CHUNK - 1500 + 10
        stream.seek(5 * CHUNK - 1500 + 10)  # inside chunk 5
        with pytest.raises(ChunkIntegrityError) as second:
            stream.read(20)
        assert second.value.chunk_index == 5
        assert stream.failure is first.value  # the first one stays
        stream.seek(0)
        assert stream.read(CHUNK) == FILES["b.bin"][:CHUNK]  # chunks 1-2 are sound


def test_a_failed_whole_chunk_read_is_remembered_too(tmp_path: Path) -> None:
    """Rule: a chunk decrypted straight into the caller's buffer is kept as a failure too."""
    path = _sealed(tmp_path)
    _damage(path, 4)
    with SealedReader(path, KEY, workers=1) as r:
        stream = r.entry_stream("b.bin")
        with pytest.raises(ChunkIntegrityError):
            stream.read()
        assert stream.failure is not None and stream.failure.chunk_index == 4


def test_verify_rest_checks_only_what_was_not_read_and_shared_chunks(tmp_path: Path) -> None:
    """Rule: ``verify_rest`` authenticates the entry's unread chunks, shared edges included."""
    path = _sealed(tmp_path)
    with SealedReader(path, KEY, workers=2) as r:
        stream = r.entry_stream("b.bin")
        stream.read(10)
        stream.verify_rest()  # a sound file: nothing to report
        assert stream.failure is None
        assert stream.read(10) == FILES["b.bin"][10:20]  # the position is untouched
    # chunk 6 holds b.bin's last bytes and c.bin's first ones
    _damage(path, 6)
    with SealedReader(path, KEY, workers=2) as r:
        stream = r.entry_stream("b.bin")
        stream.read(2 * CHUNK)
        with pytest.raises(ChunkIntegrityError) as info:
            stream.verify_rest()
        assert info.value.chunk_index == 6 and stream.failure is info.value
        # c.bin starts in the damaged chunk: its unread first chunk is checked too
        other = r.entry_stream("c.bin")
        other.seek(len(FILES["c.bin"]) - 1)
        with pytest.raises(ChunkIntegrityError):
            other.verify_rest()


def test_verify_rest_after_a_full_read_is_quiet(tmp_path: Path) -> None:
    with SealedReader(_sealed(tmp_path), KEY, workers=2) as r:
        for name, data in FILES.items():
            stream = r.entry_stream(name)
            assert stream.read() == data
            stream.verify_rest()
            assert stream.failure is None


# --- progress --------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
def test_progress_reports_exactly_the_bytes_delivered(tmp_path: Path, workers: int) -> None:
    """Rule: progress amounts add up to the range, one call per chunk it touches."""
    path = _sealed(tmp_path)
    payload = _payload()
    with SealedReader(path, KEY, workers=workers) as r:
        for offset, size in ((0, len(payload)), (10, 3 * CHUNK), (1500, 2000), (100, 50)):
            amounts: list[int] = []  # list.append is atomic: the workers may call it
            buf = bytearray(size)
            r.read_into(offset, buf, progress=amounts.append)
            assert bytes(buf) == payload[offset : offset + size]
            touched = range(offset // CHUNK, (offset + size - 1) // CHUNK + 1)
            expected = [
                min(offset + size, (i + 1) * CHUNK) - max(offset, i * CHUNK) for i in touched
            ]
            assert sorted(amounts) == sorted(expected)
        amounts_all: list[int] = []
        assert r.read_all(progress=amounts_all.append).tobytes() == payload
        assert sum(amounts_all) == len(payload) and len(amounts_all) == r.header.chunk_count
        amounts_verify: list[int] = []
        r.verify(progress=amounts_verify.append)
        assert sorted(amounts_verify) == sorted(
            r.header.chunk_plaintext_size(i) for i in range(r.header.chunk_count)
        )


# --- device copies ----------------------------------------------------------------------


class _Copier:
    """A device copier that copies at once (the ring's timing is tested elsewhere)."""

    def __init__(self, slot_size: int, size: int) -> None:
        self.slots: dict[int, bytearray] = {}
        self.slot_size = slot_size
        self.dest = bytearray(size)
        self.finished = 0
        self.submits = 0

    def acquire(self, slot: int) -> memoryview:
        return memoryview(self.slots.setdefault(slot, bytearray(self.slot_size)))

    def submit(self, slot: int, src_offset: int, dst_offset: int, size: int) -> None:
        self.submits += 1
        self.dest[dst_offset : dst_offset + size] = self.slots[slot][src_offset : src_offset + size]

    def finish(self) -> None:
        self.finished += 1


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_a_device_copy_lands_every_range_exactly(tmp_path: Path, workers: int) -> None:
    """Rule: ``dest[0:size]`` gets payload ``[offset, offset+size)``; progress adds up."""
    path = _sealed(tmp_path)
    payload = _payload()
    with SealedReader(path, KEY, workers=workers) as r:
        for offset, size in (
            (0, len(payload)),
            (1, CHUNK),
            (CHUNK - 1, 2),
            (1500, 4000),
            (0, CHUNK - 1),
            (10, 2 * CHUNK - 10),  # ends exactly at a chunk edge
        ):
            copier = _Copier(CHUNK, size)
            amounts: list[int] = []
            r.copy_to_device(offset, size, copier, progress=amounts.append)
            assert bytes(copier.dest) == payload[offset : offset + size]
            assert sum(amounts) == size and copier.finished == 1
            touched = (offset + size - 1) // CHUNK - offset // CHUNK + 1
            assert copier.submits == len(amounts) == touched


def test_device_copy_ranges_are_checked_before_anything_is_sent(tmp_path: Path) -> None:
    """Rule: a negative offset or size, or a range past the payload, is refused."""
    path = _sealed(tmp_path)
    size = len(_payload())
    with SealedReader(path, KEY) as r:
        for offset, length in ((-1, 1), (-1, 0), (0, -1), (5, -1), (size, 1), (0, size + 1)):
            copier = _Copier(CHUNK, max(0, length))
            with pytest.raises(ValueError, match="outside the payload"):
                r.copy_to_device(offset, length, copier)
            assert copier.submits == 0
        copier = _Copier(CHUNK, 0)
        r.copy_to_device(size, 0, copier)  # an empty range at the end is fine
        assert copier.submits == 0 and copier.finished == 1


def test_byte_ranges_are_checked_on_both_ends(tmp_path: Path) -> None:
    path = _sealed(tmp_path)
    size = len(_payload())
    with SealedReader(path, KEY) as r:
        for offset, length in ((-1, 0), (-1, 1), (size, 1), (size + 1, 0)):
            with pytest.raises(ValueError, match="outside the payload"):
                r.read_into(offset, bytearray(length))
        assert r.read_range(0, size) == _payload()


# --- lifecycle -------------------------------------------------------------------------------


def test_closing_a_reader_stops_its_threads(tmp_path: Path) -> None:
    """Rule: the worker threads a reader starts end with ``close``, not at exit."""
    before = set(threading.enumerate())
    with SealedReader(_sealed(tmp_path), KEY, workers=4) as r:
        assert r.read_all().tobytes() == _payload()
        started = set(threading.enumerate()) - before
        assert started  # parallel decryption used worker threads
    assert not [t for t in started if t.is_alive()]


# --- the entry stream's one-chunk cache ------------------------------------------------------


def test_the_cache_never_serves_another_chunks_bytes(tmp_path: Path) -> None:
    """Rule: a small read served from the cache is the bytes of the chunk it asks for,
    after reads that put other chunks (chunk 0 included) through the cache."""
    data = FILES["a.bin"]  # payload bytes 0-1499: chunks 0 and 1
    with SealedReader(_sealed(tmp_path), KEY, workers=2) as r:
        stream = r.entry_stream(r.header.entry("a.bin"))  # an Entry, not its name
        for start in (1100, 10, 1200, 20, 1030, 1000, 5, 1400):
            stream.seek(start)
            assert stream.read(30) == data[start : start + 30], start


# --- verify_rest covers the entry's own chunks, and only those --------------------------------

# x.bin ends 1 byte before a chunk edge; y.bin's last byte is the first byte of chunk 3
EDGES = {"x.bin": os.urandom(2 * CHUNK - 1), "y.bin": os.urandom(CHUNK + 2), "z.bin": b"z" * 500}


def _sealed_edges(tmp_path: Path) -> Path:
    src = tmp_path / "edges"
    src.mkdir(exist_ok=True)
    for name, data in EDGES.items():
        (src / name).write_bytes(data)
    out = tmp_path / "e.mseal"
    seal_path(src, out, KEY, chunk_size=CHUNK, overwrite=True)
    return out


def test_verify_rest_covers_the_chunk_holding_an_entrys_last_byte(tmp_path: Path) -> None:
    path = _sealed_edges(tmp_path)
    _damage(path, 3)  # y.bin's last byte, z.bin's bytes
    with SealedReader(path, KEY) as r:
        with pytest.raises(ChunkIntegrityError) as info:
            r.entry_stream("y.bin").verify_rest()
        assert info.value.chunk_index == 3
        r.entry_stream("x.bin").verify_rest()  # chunks 0-1: sound


def test_verify_rest_does_not_fail_an_entry_for_another_entrys_chunk(tmp_path: Path) -> None:
    """Rule: entries are checked on their own: damage in chunks an entry does not touch
    fails the entries that do, not this one (a loader reads one entry of many)."""
    path = _sealed_edges(tmp_path)
    _damage(path, 2)  # wholly inside y.bin, just after x.bin's last chunk
    with SealedReader(path, KEY) as r:
        r.entry_stream("x.bin").verify_rest()
        r.entry_stream("z.bin").verify_rest()
        with pytest.raises(ChunkIntegrityError):
            r.entry_stream("y.bin").verify_rest()
    path = _sealed(tmp_path)
    _damage(path, 0)  # wholly inside a.bin
    with SealedReader(path, KEY) as r:
        for name in ("b.bin", "c.bin"):
            r.entry_stream(name).verify_rest()


# --- opening: what a cut or padded file is reported as ------------------------------------------


def test_a_cut_or_padded_file_says_where_and_by_how_much(tmp_path: Path) -> None:
    """Rule: the refusal names the part the file ends in, or how many bytes are off."""
    path = _sealed(tmp_path)
    whole = path.read_bytes()
    header_len = int.from_bytes(whole[12:16], "big")
    cut = tmp_path / "cut.mseal"
    for size, expected in (
        (16 + 3, TruncatedError("file ends inside the header")),
        (16 + header_len + 5, TruncatedError("file ends inside the header authentication code")),
        (len(whole) - 5, TruncatedError("file is 5 bytes shorter than its header says")),
    ):
        cut.write_bytes(whole[:size])
        with pytest.raises(TruncatedError) as info:
            SealedReader(cut, KEY)
        assert str(info.value) == str(expected)
    cut.write_bytes(whole + b"abc")
    with pytest.raises(TrailingDataError) as trailing:
        SealedReader(cut, KEY)
    assert str(trailing.value) == "3 unexpected bytes after the payload"
    missing = tmp_path / "missing.mseal"
    with pytest.raises(FormatError) as absent:
        SealedReader(missing, KEY)
    assert str(absent.value) == f"cannot open {missing}: No such file or directory"


def test_a_damaged_chunk_is_named_in_the_error(tmp_path: Path) -> None:
    path = _sealed(tmp_path)
    _damage(path, 3)
    with SealedReader(path, KEY) as r, pytest.raises(ChunkIntegrityError) as info:
        r.read_chunk(3)
    assert str(info.value) == "chunk 3 failed authentication: the file was modified or damaged"


# --- closing -------------------------------------------------------------------------------------


def _open_fds() -> set[str]:
    """This process's open file descriptors (``/proc``: Linux, where the suite runs)."""
    return set(os.listdir("/proc/self/fd"))


def test_closing_releases_the_file_and_its_mapping_and_may_be_repeated(tmp_path: Path) -> None:
    """Rule: ``close`` gives back the file and the mapping (its own descriptor), once or twice."""
    path = _sealed(tmp_path)
    before = _open_fds()
    r = SealedReader(path, KEY, workers=3)
    assert r.read_all().tobytes() == _payload()
    assert len(_open_fds() - before) >= 2  # the file, and the mapping's duplicate
    r.close()
    assert _open_fds() - before == set()
    r.close()


def test_a_failed_read_leaves_nothing_in_the_cache_to_serve(tmp_path: Path) -> None:
    """Rule: a chunk that failed authentication while being decrypted into the cache is
    never served from it: the next small read of the chunk cached before gets that
    chunk's own (authenticated) bytes."""
    path = _sealed(tmp_path)
    _damage(path, 0)  # a.bin's first chunk; chunk 1 (a.bin's end, b.bin's start) is sound
    data = FILES["a.bin"]
    with SealedReader(path, KEY, workers=2) as r:
        stream = r.entry_stream("a.bin")
        stream.seek(1100)
        assert stream.read(30) == data[1100:1130]  # chunk 1, now in the cache
        stream.seek(10)
        with pytest.raises(ChunkIntegrityError):
            stream.read(30)  # chunk 0, decrypted into the cache, refused
        stream.seek(1200)
        assert stream.read(30) == data[1200:1230]


def test_a_failed_verify_rest_leaves_nothing_in_the_cache_to_serve(tmp_path: Path) -> None:
    """Rule: as above, for ``verify_rest``: it checks unread chunks through the cache, and
    a chunk it refuses must not be served as the chunk cached before (AES-GCM writes
    the unauthenticated plaintext out before the tag fails: flipped ciphertext bits
    would come back as flipped plaintext bits)."""
    path = _sealed(tmp_path)
    _damage(path, 0)
    data = FILES["a.bin"]
    with SealedReader(path, KEY, workers=2) as r:
        stream = r.entry_stream("a.bin")
        stream.seek(1100)
        assert stream.read(30) == data[1100:1130]  # chunk 1, now in the cache
        with pytest.raises(ChunkIntegrityError):
            stream.verify_rest()  # chunk 0, never read: refused
        stream.seek(1200)
        assert stream.read(30) == data[1200:1230]
