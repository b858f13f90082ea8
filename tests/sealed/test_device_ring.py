"""The copy ring behind ``device="cuda"``, tested with a fake device copier.

The fake copies *late*: a submitted copy reads its host slot only when the
slot is acquired again or at ``finish``, as an asynchronous DMA would. A
ring that rewrote a slot before waiting for its copy would therefore put
the wrong bytes on the "device", and the final-bytes checks fail.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelseal.crypto import ContentKey
from modelseal.errors import ChunkIntegrityError
from modelseal.sealed import SealedReader, seal_path
from modelseal.sealed.reader import RING_SLOTS_PER_WORKER

KEY = ContentKey(bytes(range(32)))


@dataclass
class _Copy:
    slot: int
    src: int
    dst: int
    size: int
    wave_marker: int  # how many acquires had happened when it was submitted


@dataclass
class FakeCopier:
    """A device copier whose copies complete only when their slot is reused or at finish."""

    slot_size: int
    dest_size: int
    dest: bytearray = field(init=False)
    slots: dict[int, bytearray] = field(default_factory=dict)
    pending: list[_Copy] = field(default_factory=list)
    log: list[tuple[str, int]] = field(default_factory=list)
    submitted: list[_Copy] = field(default_factory=list)
    pending_at_acquire: list[int] = field(default_factory=list)
    finished: int = 0
    acquires: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.dest = bytearray(b"\xee" * self.dest_size)

    def _complete(self, copies: list[_Copy]) -> None:
        for c in copies:
            self.dest[c.dst : c.dst + c.size] = self.slots[c.slot][c.src : c.src + c.size]
            self.pending.remove(c)

    def acquire(self, slot: int) -> memoryview:
        with self.lock:
            self.log.append(("acquire", slot))
            self.acquires += 1
            self.pending_at_acquire.append(len(self.pending))
            self._complete([c for c in self.pending if c.slot == slot])
            buf = self.slots.setdefault(slot, bytearray(self.slot_size))
            # poison: a chunk that is not decrypted into the slot is visible
            buf[:] = b"\xa5" * self.slot_size
            return memoryview(buf)

    def submit(self, slot: int, src_offset: int, dst_offset: int, size: int) -> None:
        with self.lock:
            assert self.finished == 0, "submit after finish"
            assert src_offset >= 0 and src_offset + size <= self.slot_size
            self.log.append(("submit", slot))
            copy = _Copy(slot, src_offset, dst_offset, size, self.acquires)
            self.pending.append(copy)
            self.submitted.append(copy)

    def finish(self) -> None:
        self.log.append(("finish", -1))
        self.finished += 1
        self._complete(list(self.pending))


def _sealed(tmp_path: Path, data: bytes, chunk_size: int) -> Path:
    src = tmp_path / "model.bin"
    src.write_bytes(data)
    out = tmp_path / "model.mseal"
    seal_path(src, out, KEY, chunk_size=chunk_size)
    return out


def _run(path: Path, offset: int, size: int, workers: int) -> tuple[FakeCopier, SealedReader]:
    reader = SealedReader(path, KEY, workers=workers)
    copier = FakeCopier(reader.header.chunk_size, size)
    reader.copy_to_device(offset, size, copier)
    return copier, reader


def test_final_bytes_order_and_overlap(tmp_path: Path) -> None:
    chunk = 4096
    data = os.urandom(chunk * 13 + 123)
    path = _sealed(tmp_path, data, chunk)
    copier, reader = _run(path, 0, len(data), workers=2)
    with reader:
        assert bytes(copier.dest) == data
        # copies go out in file order, each to the bytes right after the last
        dsts = [(c.dst, c.size) for c in copier.submitted]
        assert [d for d, _ in dsts] == [sum(s for _, s in dsts[:k]) for k in range(len(dsts))]
        assert len(copier.submitted) == 14
        # host memory is the ring: never more slots than the ring has
        assert {c.slot for c in copier.submitted} == set(range(reader.ring_slots()))
        assert reader.ring_slots() == 2 * RING_SLOTS_PER_WORKER
        # overlap: from the second wave on, the previous wave's copies are still
        # in flight while the next chunks are acquired and decrypted; nothing
        # waits for a copy except by reusing its slot
        assert max(copier.pending_at_acquire) >= 2
        assert copier.log.count(("finish", -1)) == 1 and copier.log[-1] == ("finish", -1)
        for k, c in enumerate(copier.submitted[2:], start=2):
            # the slot of chunk k was last used by chunk k - ring_slots
            assert c.slot == k % reader.ring_slots()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunk=st.sampled_from([1024, 2048]),
    length=st.integers(0, 9000),
    lo=st.integers(0, 9000),
    span=st.integers(0, 9000),
    workers=st.integers(1, 4),
)
def test_any_range_lands_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    chunk: int,
    length: int,
    lo: int,
    span: int,
    workers: int,
) -> None:
    tmp = tmp_path_factory.mktemp("ring")
    data = os.urandom(length)
    path = _sealed(tmp, data, chunk)
    offset = min(lo, length)
    size = min(span, length - offset)
    copier, reader = _run(path, offset, size, workers)
    with reader:
        assert bytes(copier.dest) == data[offset : offset + size]
        assert sum(c.size for c in copier.submitted) == size
        assert copier.finished == 1
        assert len({c.slot for c in copier.submitted}) <= RING_SLOTS_PER_WORKER * workers


def test_fake_catches_a_slot_reused_before_its_copy(tmp_path: Path) -> None:
    """The fake is strict enough: skipping the wait corrupts the device bytes."""
    copier = FakeCopier(slot_size=4, dest_size=8)
    buf = copier.acquire(0)
    buf[:] = b"AAAA"
    copier.submit(0, 0, 0, 4)
    buf[:] = b"BBBB"  # reused without acquire (no wait): the pending copy sees B
    copier.submit(0, 0, 4, 4)
    copier.finish()
    assert bytes(copier.dest) != b"AAAABBBB"


def test_tampered_chunk_sends_nothing_from_it_or_after(tmp_path: Path) -> None:
    chunk = 1024
    data = os.urandom(chunk * 10)
    path = _sealed(tmp_path, data, chunk)
    raw = bytearray(path.read_bytes())
    raw[-(4 * (chunk + 16)) - 5] ^= 1  # inside chunk 5 of 0..9 (4 whole chunks follow)
    path.write_bytes(bytes(raw))
    reader = SealedReader(path, KEY, workers=2)
    copier = FakeCopier(chunk, len(data))
    with reader, pytest.raises(ChunkIntegrityError) as info:
        reader.copy_to_device(0, len(data), copier)
    assert info.value.chunk_index == 5
    assert copier.finished == 1 and not copier.pending
    # only the waves before the failing one (chunks 4 and 5) reached the device
    assert max(c.dst + c.size for c in copier.submitted) == 4 * chunk


def test_range_outside_payload_refused(tmp_path: Path) -> None:
    path = _sealed(tmp_path, b"x" * 100, 1024)
    with SealedReader(path, KEY) as reader, pytest.raises(ValueError, match="outside"):
        reader.copy_to_device(50, 51, FakeCopier(1024, 51))
