"""Parallel reads: the calling thread takes a share, edge chunks decrypt in parallel.

``torch.load`` reads a sealed checkpoint through :class:`EntryStream` one
record at a time: a 30-byte zip header, then the record's bytes, whose
first and last chunks are partial. These tests pin down what makes that
path fast without giving up what makes it safe: every chunk is decrypted
once in a sequential read (the cache), partial chunks are decrypted on the
worker threads like whole ones, and no worker is still writing when an
error reaches the caller.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from modelseal.crypto import ContentKey
from modelseal.errors import ChunkIntegrityError
from modelseal.sealed import SealedReader, seal_path

KEY = ContentKey(bytes(range(32)))
CHUNK = 1024


def _sealed(tmp_path: Path, data: bytes) -> Path:
    src, out = tmp_path / "w.bin", tmp_path / "w.mseal"
    src.write_bytes(data)
    seal_path(src, out, KEY, chunk_size=CHUNK)
    return out


class _Counting:
    """Wraps a reader's ``_open_chunk`` to count decryptions and the threads doing them."""

    def __init__(self, reader: SealedReader) -> None:
        self.calls: Counter[int] = Counter()
        self.threads: dict[int, int] = {}
        self._inner = reader._open_chunk
        self._lock = threading.Lock()
        reader._open_chunk = self  # type: ignore[method-assign]

    def __call__(self, index: int, out: memoryview) -> None:
        with self._lock:
            self.calls[index] += 1
            self.threads[index] = threading.get_ident()
        self._inner(index, out)


def test_zip_like_sequential_reads_decrypt_each_chunk_once(tmp_path: Path) -> None:
    data = os.urandom(CHUNK * 20 + 300)
    path = _sealed(tmp_path, data)
    with SealedReader(path, KEY, workers=2) as reader:
        counting = _Counting(reader)
        stream = reader.entry_stream("w.bin")
        got = bytearray()
        pos = 0
        per_record: list[set[int]] = []
        # header (30 bytes), record (4.3 chunks, both ends partial), header, ...
        for size in (30, 4400, 30, 4400, 30, 4400, 30, 4400, 10_000):
            before = set(counting.threads)
            part = stream.read(size)
            assert part == data[pos : pos + size]
            if size == 4400:
                per_record.append({counting.threads[i] for i in set(counting.threads) - before})
            got += part
            pos += len(part)
        assert bytes(got) == data
        # the cache makes a sequential read decrypt every chunk exactly once,
        # including the partial chunk a record shares with the next header
        assert set(counting.calls) == set(range(21))
        assert max(counting.calls.values()) == 1
        # and every record's chunks, partial ones included, were shared out
        # between the calling thread and the pool
        caller = threading.get_ident()
        assert len(set(counting.threads.values())) == 2
        assert all(len(threads) == 2 and caller in threads for threads in per_record)


def test_a_read_starting_in_the_cached_chunk_copies_it(tmp_path: Path) -> None:
    data = os.urandom(CHUNK * 6)
    path = _sealed(tmp_path, data)
    with SealedReader(path, KEY, workers=2) as reader:
        stream = reader.entry_stream("w.bin")
        assert stream.read(CHUNK + 10) == data[: CHUNK + 10]  # chunk 1 now cached
        counting = _Counting(reader)
        assert stream.read(3 * CHUNK) == data[CHUNK + 10 : 4 * CHUNK + 10]
        assert counting.calls[1] == 0  # from the cache
        assert counting.calls == Counter({2: 1, 3: 1, 4: 1})


def test_an_uncached_start_edge_goes_through_scratch(tmp_path: Path) -> None:
    data = os.urandom(CHUNK * 8 + 7)
    path = _sealed(tmp_path, data)
    with SealedReader(path, KEY, workers=2) as reader:
        stream = reader.entry_stream("w.bin")
        stream.seek(CHUNK * 2 + 500)
        assert stream.read(CHUNK * 3) == data[CHUNK * 2 + 500 : CHUNK * 5 + 500]
        # the later edge (chunk 5) is what the cache keeps, not the earlier one
        counting = _Counting(reader)
        assert stream.read(100) == data[CHUNK * 5 + 500 : CHUNK * 5 + 600]
        assert not counting.calls
        stream.seek(CHUNK * 2 + 501)
        assert stream.read(10) == data[CHUNK * 2 + 501 : CHUNK * 2 + 511]
        assert counting.calls == Counter({2: 1})


def test_a_damaged_edge_chunk_fails_the_read_and_is_remembered(tmp_path: Path) -> None:
    data = os.urandom(CHUNK * 8)
    path = _sealed(tmp_path, data)
    raw = bytearray(path.read_bytes())
    raw[-(3 * (CHUNK + 16)) - 40] ^= 1  # inside chunk 4 of 0..7
    path.write_bytes(bytes(raw))
    with SealedReader(path, KEY, workers=2) as reader:
        stream = reader.entry_stream("w.bin")
        stream.seek(CHUNK + 100)
        with pytest.raises(ChunkIntegrityError) as info:
            stream.read(CHUNK * 3 + 50)  # chunks 1..4, chunk 4 a partial edge
        assert info.value.chunk_index == 4
        assert stream.failure is not None and stream.failure.chunk_index == 4
        # nothing from the damaged chunk was cached as if it had authenticated
        stream.seek(CHUNK * 4 + 10)
        with pytest.raises(ChunkIntegrityError):
            stream.read(5)


def test_the_calling_thread_takes_a_share_and_waits_for_the_others(tmp_path: Path) -> None:
    path = _sealed(tmp_path, os.urandom(CHUNK * 4))
    with SealedReader(path, KEY, workers=2) as reader:
        caller = threading.get_ident()
        ran: dict[int, int] = {}
        started = threading.Event()
        finished = threading.Event()

        def work(share: list[int]) -> None:
            ran[share[0]] = threading.get_ident()
            if share[0] == 0:
                assert started.wait(10)
                raise RuntimeError("first share fails")
            started.set()
            time.sleep(0.2)  # still writing when the first share fails
            finished.set()

        with pytest.raises(RuntimeError, match="first share fails"):
            reader._parallel([[0], [1]], work)
        # the error reached the caller only after the other share had finished
        assert finished.is_set()
        assert ran[0] == caller and ran[1] != caller


def test_reads_alternating_between_start_and_end_decrypt_each_edge_once(tmp_path: Path) -> None:
    """Rule: the stream keeps two decrypted chunks, so a zip reader's pattern
    (the archive's start, its central directory at the end, the start again)
    decrypts each of those chunks once, and a third chunk evicts the least
    recently used one."""
    data = os.urandom(CHUNK * 10 + 77)
    path = _sealed(tmp_path, data)
    with SealedReader(path, KEY, workers=2) as reader:
        counting = _Counting(reader)
        stream = reader.entry_stream("w.bin")
        end = len(data)
        for _ in range(3):
            stream.seek(end - 40)
            assert stream.read(22) == data[end - 40 : end - 18]
            stream.seek(30)
            assert stream.read(30) == data[30:60]
        assert counting.calls == Counter({10: 1, 0: 1})
        stream.seek(CHUNK * 5 + 3)  # a third chunk evicts chunk 10, the least recently used
        assert stream.read(5) == data[CHUNK * 5 + 3 : CHUNK * 5 + 8]
        stream.seek(31)
        assert stream.read(4) == data[31:35]
        assert counting.calls == Counter({10: 1, 0: 1, 5: 1})
        stream.seek(end - 5)
        assert stream.read() == data[end - 5 :]
        assert counting.calls == Counter({10: 2, 0: 1, 5: 1})


def test_a_chunk_that_fails_is_never_served_from_the_cache(tmp_path: Path) -> None:
    """Rule: a chunk joins the cache only after it authenticates; a second
    read of a damaged chunk decrypts (and fails) again, never returns the
    unauthenticated plaintext left in the buffer."""
    data = os.urandom(CHUNK * 4)
    path = _sealed(tmp_path, data)
    raw = bytearray(path.read_bytes())
    raw[-(CHUNK + 16) - 40] ^= 1  # inside chunk 2's ciphertext (chunks 0-3, the last is 3)
    path.write_bytes(bytes(raw))
    with SealedReader(path, KEY, workers=2) as reader:
        stream = reader.entry_stream("w.bin")
        for _ in range(2):
            stream.seek(CHUNK * 2 + 10)
            with pytest.raises(ChunkIntegrityError) as err:
                stream.read(10)
            assert err.value.chunk_index == 2
        stream.seek(5)
        assert stream.read(10) == data[5:15]


def test_default_workers_follow_the_cpus_this_process_may_use() -> None:
    """Rule: thread count comes from the affinity mask (a container pinned to
    two CPUs of a big host gets two threads), capped at 8, at least 1."""
    from modelseal.sealed.writer import default_workers

    allowed = os.sched_getaffinity(0)
    assert default_workers() == max(1, min(8, len(allowed)))
    one = {min(allowed)}
    os.sched_setaffinity(0, one)
    try:
        assert default_workers() == 1
    finally:
        os.sched_setaffinity(0, allowed)
