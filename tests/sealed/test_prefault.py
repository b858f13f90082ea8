"""Pre-faulting decryption targets (MADV_POPULATE_WRITE) changes no byte, and its
absence (older kernels, other systems) only means page faults as before."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelseal.sealed.reader as reader_mod
from modelseal.crypto import ContentKey
from modelseal.sealed import SealedReader, seal_path

KEY = ContentKey(bytes(32))


def _sealed(tmp_path: Path, data: bytes) -> Path:
    (tmp_path / "m.bin").write_bytes(data)
    seal_path(tmp_path / "m.bin", tmp_path / "m.mseal", KEY, chunk_size=1 << 17)
    return tmp_path / "m.mseal"


def test_prefault_keeps_neighbours_and_contents(tmp_path: Path) -> None:
    data = os.urandom((1 << 20) + 12345)
    path = _sealed(tmp_path, data)
    # an unaligned window inside a larger buffer: bytes around it stay as they were
    outer = np.full(len(data) + 2 * 4096 + 7, 0x5A, dtype=np.uint8)
    with SealedReader(path, KEY) as reader:
        reader.read_into(0, outer[4099 : 4099 + len(data)])
    assert outer[4099 : 4099 + len(data)].tobytes() == data
    assert (outer[:4099] == 0x5A).all() and (outer[4099 + len(data) :] == 0x5A).all()


def test_a_kernel_without_populate_falls_back(tmp_path: Path, monkeypatch: Any) -> None:
    if reader_mod._madvise is None:
        pytest.skip("no madvise on this platform")
    calls: list[int] = []

    def refusing(addr: int, length: int, advice: int) -> int:
        calls.append(advice)
        return -1 if advice == reader_mod._MADV_POPULATE_WRITE else 0

    monkeypatch.setattr(reader_mod, "_madvise", refusing)
    monkeypatch.setattr(reader_mod, "_prefault_ok", True)
    data = os.urandom(1 << 20)
    path = _sealed(tmp_path, data)
    with SealedReader(path, KEY) as reader:
        assert reader.read_all().tobytes() == data
        assert reader.read_all().tobytes() == data
    # asked once, then never again
    assert calls.count(reader_mod._MADV_POPULATE_WRITE) == 1
    assert reader_mod._prefault_ok is False
