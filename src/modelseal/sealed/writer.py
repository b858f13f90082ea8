"""Seal a model file or directory into one ``.mseal`` container.

Streams in constant memory: a batch of chunks is read, encrypted in
parallel (``AESGCM.encrypt_into`` releases the GIL) and written, so memory
stays at a few chunk buffers whatever the model size. The container is
written to a temporary file beside the target and renamed into place only
when complete, so a failed or interrupted seal never leaves a ``.mseal``
that looks valid.
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from modelseal.crypto import TAG_SIZE, Aead, ContentKey
from modelseal.errors import FormatError, ModelsealError
from modelseal.sealed.format import (
    DEFAULT_CHUNK_SIZE,
    FRAMEWORK_HINTS,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    PREAMBLE_SIZE,
    SALT_SIZE,
    Entry,
    Header,
    chunk_aad,
    derive_keys,
    encode_preamble,
    header_mac,
    validate_entry_path,
)

Progress = Callable[[int], None]

#: Chunks encrypted per batch; 2 workers x 8 MiB keeps memory small and both cores busy.
_BATCH_CHUNKS = 8


@dataclass(frozen=True)
class _Source:
    entry: Entry
    file: Path


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _collect(src: Path) -> tuple[str, list[tuple[str, Path]]]:
    if src.is_file():
        return "file", [(validate_entry_path(src.name), src)]
    if src.is_dir():
        files: list[tuple[str, Path]] = []
        for path in sorted(src.rglob("*")):
            if path.is_symlink():
                raise FormatError(f"refusing to seal symlink {path} (it could point anywhere)")
            if path.is_file():
                files.append((validate_entry_path(path.relative_to(src).as_posix()), path))
        if not files:
            raise FormatError(f"directory {src} has no files to seal")
        return "directory", files
    raise FormatError(f"{src} is not a file or directory")


def detect_framework(kind: str, files: Sequence[tuple[str, Path]]) -> str:
    """A hint for loaders, from names and magic bytes; never from running the file."""
    names = [name for name, _ in files]
    lower = [n.lower() for n in names]
    if kind == "directory":
        if any(n.endswith(".safetensors") for n in lower):
            return "safetensors"
        if any(n.endswith(".pdiparams") for n in lower):
            return "paddle"
        if any(n.endswith(".onnx") for n in lower):
            return "onnx"
        return "bytes"
    name, path = lower[0], files[0][1]
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith((".pdiparams", ".pdmodel")):
        return "paddle"
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                members = zf.namelist()
            if any(m.endswith("/constants.pkl") or "/code/" in m for m in members):
                return "torchscript"
            if any(m.endswith("/data.pkl") or m == "data.pkl" for m in members):
                return "torch"
    except (OSError, zipfile.BadZipFile):
        pass
    if name.endswith((".pt", ".pth", ".bin", ".ckpt")):
        return "torch"
    return "bytes"


def seal_path(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    content_key: ContentKey,
    *,
    aead: str = "aes-256-gcm",
    model_id: str | None = None,
    framework: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Header:
    """Seal ``src`` (a file or a directory) to ``out``; returns the written header."""
    src_path = Path(src)
    out_path = Path(out)
    if not (MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE and chunk_size & (chunk_size - 1) == 0):
        raise FormatError("chunk size must be a power of two between 1 KiB and 64 MiB")
    kind, files = _collect(src_path)
    if framework is None:
        framework = detect_framework(kind, files)
    elif framework not in FRAMEWORK_HINTS:
        raise FormatError(f"unknown framework hint {framework!r}")
    if out_path.resolve() in {p.resolve() for _, p in files}:
        raise FormatError("the output would overwrite an input file")

    sources: list[_Source] = []
    offset = 0
    for name, path in files:
        size = path.stat().st_size
        sources.append(_Source(Entry(name, offset, size), path))
        offset += size
    salt = os.urandom(SALT_SIZE)
    header = Header(
        aead=aead,
        chunk_size=chunk_size,
        salt=salt,
        key_id=content_key.key_id,
        model_id=model_id,
        framework=framework,
        kind=kind,
        payload_size=offset,
        entries=tuple(s.entry for s in sources),
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    keys = derive_keys(content_key, salt, aead)
    header_bytes = header.encode()
    head = encode_preamble(len(header_bytes)) + header_bytes
    assert len(head) == PREAMBLE_SIZE + len(header_bytes)
    mac = header_mac(keys.mac_key, head)
    aad = chunk_aad(head, mac)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    tmp = Path(tmp_name)
    try:
        with io.FileIO(fd, "wb", closefd=True) as dst:
            dst.write(head)
            dst.write(mac)
            _write_payload(dst, sources, header, keys.aead, keys.nonce, aad, workers, progress)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return header


class _PayloadStream:
    """Reads the entries' bytes in order as one stream, checking sizes as it goes."""

    def __init__(self, sources: Sequence[_Source]) -> None:
        self._sources = list(sources)
        self._i = 0
        self._fh: io.FileIO | None = None
        self._left = 0

    def readinto(self, buf: memoryview) -> int:
        filled = 0
        while filled < len(buf):
            if self._fh is None:
                if self._i >= len(self._sources):
                    break
                src = self._sources[self._i]
                self._fh = io.FileIO(src.file, "rb")
                self._left = src.entry.size
            fh = self._fh
            want = min(len(buf) - filled, self._left)
            n = (fh.readinto(buf[filled : filled + want]) or 0) if want else 0
            if want and not n:
                raise ModelsealError(
                    f"{self._sources[self._i].file} shrank while it was being sealed"
                )
            filled += n
            self._left -= n
            if self._left == 0:
                if fh.read(1):
                    raise ModelsealError(
                        f"{self._sources[self._i].file} grew while it was being sealed"
                    )
                fh.close()
                self._fh = None
                self._i += 1
        return filled

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _write_all(dst: io.FileIO, data: memoryview) -> None:
    while data:
        n = dst.write(data) or 0
        data = data[n:]


def _write_payload(
    dst: io.FileIO,
    sources: Sequence[_Source],
    header: Header,
    aead: Aead,
    nonce: Callable[[int, bool], bytes],
    aad: bytes,
    workers: int | None,
    progress: Progress | None,
) -> None:
    """Three-stage pipeline: read batch k+1 and write batch k-1 while batch k encrypts.

    Reads, writes and ``encrypt_into`` all release the GIL, so the stages
    overlap; measured here, overlapping took sealing from 1.0 to ~1.6 GB/s.
    """
    c = header.chunk_size
    n_chunks = header.chunk_count
    batch = _BATCH_CHUNKS
    plains = [memoryview(bytearray(c * batch)) for _ in range(2)]
    ciphers = [memoryview(bytearray((c + TAG_SIZE) * batch)) for _ in range(2)]
    stream = _PayloadStream(sources)
    n_workers = workers or default_workers()
    batches = [
        (
            start,
            [header.chunk_plaintext_size(i) for i in range(start, min(start + batch, n_chunks))],
        )
        for start in range(0, n_chunks, batch)
    ]

    def read(k: int) -> None:
        total = sum(batches[k][1])
        if stream.readinto(plains[k % 2][:total]) != total:
            raise ModelsealError("an input file shrank while it was being sealed")

    def write(k: int) -> None:
        cv = ciphers[k % 2]
        for j, size in enumerate(batches[k][1]):
            start = j * (c + TAG_SIZE)
            _write_all(dst, cv[start : start + size + TAG_SIZE])

    def encrypt(k: int, j: int) -> None:
        base, sizes = batches[k]
        i = base + j
        pv, cv = plains[k % 2], ciphers[k % 2]
        aead.encrypt_into(
            nonce(i, i == n_chunks - 1),
            pv[j * c : j * c + sizes[j]],
            aad,
            cv[j * (c + TAG_SIZE) : j * (c + TAG_SIZE) + sizes[j] + TAG_SIZE],
        )

    try:
        with ThreadPoolExecutor(max_workers=n_workers) as crypt, ThreadPoolExecutor(2) as io_pool:
            read(0)
            pending_write = None
            for k in range(len(batches)):
                # Buffers k%2 hold batch k; batch k+1 reads into the other plain
                # buffer, which batch k-1's encryption has finished with, and batch
                # k encrypts into the cipher buffer that write k-2 has released.
                next_read = io_pool.submit(read, k + 1) if k + 1 < len(batches) else None
                list(crypt.map(lambda j, k=k: encrypt(k, j), range(len(batches[k][1]))))
                if pending_write is not None:
                    pending_write.result()
                pending_write = io_pool.submit(write, k)
                if next_read is not None:
                    next_read.result()
                if progress is not None:
                    progress(sum(batches[k][1]))
            if pending_write is not None:
                pending_write.result()
            if stream.readinto(memoryview(bytearray(1))):
                raise ModelsealError("an input file grew while it was being sealed")
    finally:
        stream.close()
