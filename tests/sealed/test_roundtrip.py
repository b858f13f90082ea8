from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelseal.crypto import ContentKey
from modelseal.errors import FormatError
from modelseal.sealed import SealedReader, read_header, seal_path
from modelseal.sealed.format import MAC_SIZE, PREAMBLE_SIZE, TAG_SIZE

KEY = ContentKey(bytes(range(32)))


@pytest.mark.parametrize("aead", ["aes-256-gcm", "sm4-gcm"])
@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 4096, 10_000])
def test_file_roundtrip_every_read_path(tmp_path: Path, aead: str, size: int) -> None:
    data = os.urandom(size)
    (tmp_path / "m.bin").write_bytes(data)
    header = seal_path(
        tmp_path / "m.bin", tmp_path / "m.mseal", KEY, aead=aead, chunk_size=1024, model_id="acme/m"
    )
    assert header.model_id == "acme/m" and header.aead == aead and header.kind == "file"
    assert read_header(tmp_path / "m.mseal") == header
    with SealedReader(tmp_path / "m.mseal", KEY) as r:
        assert r.read_all().tobytes() == data
        assert b"".join(r.iter_chunks()) == data
        assert r.read_entry("m.bin").tobytes() == data
        r.verify()
        for lo, hi in [(0, size), (size // 3, size // 2), (max(0, size - 1), size)]:
            assert r.read_range(lo, hi - lo) == data[lo:hi]
    # ciphertext is plaintext + one tag per chunk, after the preamble, header and MAC
    expected_chunks = max(1, -(-size // 1024))
    assert header.chunk_count == expected_chunks
    assert header.payload_size == size
    blob = (tmp_path / "m.mseal").read_bytes()
    header_len = int.from_bytes(blob[12:16], "big")
    assert blob[PREAMBLE_SIZE + header_len - 1 : PREAMBLE_SIZE + header_len] == b"}"
    assert len(blob) == PREAMBLE_SIZE + header_len + MAC_SIZE + size + TAG_SIZE * expected_chunks


def test_directory_roundtrip_keeps_relative_paths(tmp_path: Path) -> None:
    src = tmp_path / "model"
    files = {
        "config.json": b'{"hidden": 8}',
        "model-00001-of-00002.safetensors": os.urandom(3000),
        "model-00002-of-00002.safetensors": os.urandom(1500),
        "tokenizer/vocab.txt": b"a\nb\n",
        "tokenizer/empty": b"",
    }
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    header = seal_path(src, tmp_path / "d.mseal", KEY, chunk_size=1024)
    assert header.kind == "directory" and header.framework == "safetensors"
    assert sorted(e.path for e in header.entries) == sorted(files)
    with SealedReader(tmp_path / "d.mseal", KEY) as r:
        for name, data in files.items():
            assert r.read_entry(name).tobytes() == data


def test_seal_refuses_symlinks_empty_dirs_and_bad_chunk_sizes(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(FormatError, match="no files"):
        seal_path(tmp_path / "d", tmp_path / "o.mseal", KEY)
    (tmp_path / "d" / "f").write_bytes(b"x")
    (tmp_path / "d" / "link").symlink_to("/etc/passwd")
    with pytest.raises(FormatError, match="symlink"):
        seal_path(tmp_path / "d", tmp_path / "o.mseal", KEY)
    with pytest.raises(FormatError, match="power of two"):
        seal_path(tmp_path / "d" / "f", tmp_path / "o.mseal", KEY, chunk_size=1000)
    with pytest.raises(FormatError):
        seal_path(tmp_path / "missing", tmp_path / "o.mseal", KEY)
    assert not (tmp_path / "o.mseal").exists()


def test_a_failed_seal_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m.bin").write_bytes(os.urandom(5000))
    from modelseal.sealed import writer

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(writer, "_write_payload", boom)
    with pytest.raises(RuntimeError):
        seal_path(tmp_path / "m.bin", tmp_path / "m.mseal", KEY, chunk_size=1024)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin"]


def test_same_key_same_plaintext_gives_unrelated_files(tmp_path: Path) -> None:
    (tmp_path / "m.bin").write_bytes(b"\x00" * 4096)
    seal_path(tmp_path / "m.bin", tmp_path / "a.mseal", KEY, chunk_size=1024)
    seal_path(tmp_path / "m.bin", tmp_path / "b.mseal", KEY, chunk_size=1024)
    a, b = (tmp_path / "a.mseal").read_bytes(), (tmp_path / "b.mseal").read_bytes()
    assert a[-4096:] != b[-4096:]  # fresh salt -> fresh payload key and nonces


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=6000),
    chunk_pow=st.integers(min_value=10, max_value=12),
    ranges=st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 6000)), max_size=5),
    aead=st.sampled_from(["aes-256-gcm", "sm4-gcm"]),
)
def test_property_any_payload_any_range(
    tmp_path: Path, data: bytes, chunk_pow: int, ranges: list[tuple[int, int]], aead: str
) -> None:
    src, out = tmp_path / "p.bin", tmp_path / "p.mseal"
    src.write_bytes(data)
    seal_path(src, out, KEY, chunk_size=1 << chunk_pow, aead=aead, workers=2, overwrite=True)
    with SealedReader(out, KEY, workers=2) as r:
        assert r.read_all().tobytes() == data
        for a, b in ranges:
            lo, hi = sorted((min(a, len(data)), min(b, len(data))))
            assert r.read_range(lo, hi - lo) == data[lo:hi]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(min_size=1, max_size=9000),
    reads=st.lists(st.tuples(st.integers(0, 9000), st.integers(0, 5000)), min_size=1, max_size=8),
)
def test_property_entry_stream_reads_like_a_file(
    tmp_path: Path, data: bytes, reads: list[tuple[int, int]]
) -> None:
    import io

    src, out = tmp_path / "s.bin", tmp_path / "s.mseal"
    src.write_bytes(data)
    seal_path(src, out, KEY, chunk_size=1024, overwrite=True)
    plain = io.BytesIO(data)
    with SealedReader(out, KEY, workers=2) as r:
        stream = r.entry_stream("s.bin")
        for pos, size in reads:
            stream.seek(pos)
            plain.seek(pos)
            assert stream.read(size) == plain.read(size)
        stream.verify_rest()
        stream.seek(0)
        assert stream.read() == data


def test_entry_stream_in_a_directory_and_unread_chunks_are_verified(tmp_path: Path) -> None:
    src = tmp_path / "d"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(2500))
    (src / "b.bin").write_bytes(os.urandom(5000))
    seal_path(src, tmp_path / "d.mseal", KEY, chunk_size=1024)
    with SealedReader(tmp_path / "d.mseal", KEY) as r:
        stream = r.entry_stream("b.bin")
        assert stream.read() == (src / "b.bin").read_bytes()
    blob = bytearray((tmp_path / "d.mseal").read_bytes())
    blob[-20] ^= 1  # inside b.bin's last chunk
    (tmp_path / "d.mseal").write_bytes(bytes(blob))
    from modelseal.errors import ChunkIntegrityError

    with SealedReader(tmp_path / "d.mseal", KEY) as r:
        stream = r.entry_stream("b.bin")
        stream.read(10)  # never reaches the damaged chunk
        with pytest.raises(ChunkIntegrityError):
            stream.verify_rest()
        assert stream.failure is not None


def test_framework_hints_come_from_content_not_just_names(tmp_path: Path) -> None:
    import pickle

    from modelseal.sealed import detect_framework

    (tmp_path / "weights.bin").write_bytes(b"hello" * 10)
    assert detect_framework("file", [("weights.bin", tmp_path / "weights.bin")]) == "bytes"
    (tmp_path / "legacy.bin").write_bytes(pickle.dumps({"w": 1}, protocol=2))
    assert detect_framework("file", [("legacy.bin", tmp_path / "legacy.bin")]) == "torch"
