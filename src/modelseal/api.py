"""The Python API: ``seal``, ``load``, ``open``, ``verify``, ``inspect``.

``load`` decrypts everything it needs and authenticates every chunk before
any framework object exists, so a damaged or tampered file never yields a
partially loaded model.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from types import TracebackType
from typing import Any

import numpy as np

from modelseal.crypto import ContentKey
from modelseal.errors import LoaderError, ModelsealError, UnsupportedAlgorithmError
from modelseal.loaders import FRAMEWORKS, LazySafetensors
from modelseal.loaders import onnx as onnx_loader
from modelseal.loaders import paddle as paddle_loader
from modelseal.loaders import safetensors as st_loader
from modelseal.loaders import torch as torch_loader
from modelseal.sealed import DEFAULT_CHUNK_SIZE, Entry, Header, SealedReader, read_header, seal_path

KeyLike = ContentKey | str | os.PathLike[str]
PathLike = str | os.PathLike[str]


def _content_key(key: KeyLike) -> ContentKey:
    if isinstance(key, ContentKey):
        return key
    return ContentKey.load(key)


def seal(
    src: PathLike,
    out: PathLike,
    *,
    key: KeyLike | None = None,
    aead: str = "aes-256-gcm",
    model_id: str | None = None,
    framework: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
) -> ContentKey:
    """Seal a model file or directory into ``out``; returns the content key.

    Without ``key`` a fresh content key is generated: save it
    (``key.save(path)``), it is the only way to open the file.
    """
    content_key = ContentKey.generate() if key is None else _content_key(key)
    seal_path(
        src,
        out,
        content_key,
        aead=aead,
        model_id=model_id,
        framework=framework,
        chunk_size=chunk_size,
        progress=progress,
    )
    return content_key


def inspect(path: PathLike) -> Header:
    """The public header; needs no key and authenticates nothing."""
    return read_header(path)


def verify(
    path: PathLike, *, key: KeyLike, progress: Callable[[int], None] | None = None
) -> Header:
    """Authenticate every chunk of ``path``; returns the header. Writes nothing."""
    with SealedReader(path, _content_key(key)) as reader:
        reader.verify(progress=progress)
        return reader.header


def default_framework(hint: str) -> str:
    if hint == "safetensors":
        return "torch" if importlib.util.find_spec("torch") is not None else "numpy"
    return {
        "torch": "torch",
        "torchscript": "torch",
        "onnx": "onnxruntime",
        "paddle": "paddle",
    }.get(hint, "bytes")


class SealedModel:
    """An opened sealed model: entries, lazy reads, and framework loading.

    >>> with modelseal.open("model.mseal", key="model.key") as m:
    ...     row = m.safetensors().get_slice("embed.weight")[1000:1001]
    """

    def __init__(self, path: PathLike, key: KeyLike) -> None:
        self._reader = SealedReader(path, _content_key(key))

    @property
    def header(self) -> Header:
        return self._reader.header

    @property
    def entries(self) -> tuple[Entry, ...]:
        return self._reader.header.entries

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> SealedModel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def read(self, entry: str | None = None) -> bytes:
        """One entry's plaintext (the only entry when ``entry`` is None)."""
        return self._reader.read_entry(self._entry(entry, None)).tobytes()

    def _entry(self, name: str | None, suffixes: tuple[str, ...] | None) -> Entry:
        if name is not None:
            return self.header.entry(name)
        candidates = [
            e for e in self.entries if suffixes is None or e.path.lower().endswith(suffixes)
        ]
        if len(candidates) == 1:
            return candidates[0]
        what = "entries" if suffixes is None else "/".join(suffixes) + " entries"
        listing = ", ".join(e.path for e in candidates) or "none"
        raise LoaderError(f"pick one entry with entry=...: {what} found: {listing}")

    def safetensors(self, entry: str | None = None) -> LazySafetensors:
        """Lazy tensors: only the chunks a requested tensor or row range spans decrypt."""
        e = self._entry(entry, (".safetensors",))

        def read_range(offset: int, size: int) -> np.ndarray[Any, Any]:
            buf = np.empty(size, dtype=np.uint8)
            self._reader.read_into(e.offset + offset, buf)
            return buf

        return LazySafetensors(read_range, e.size)

    def load(
        self,
        framework: str | None = None,
        *,
        entry: str | None = None,
        weights_only: bool = True,
        configure: Callable[[Any], None] | None = None,
    ) -> Any:
        """The framework object; see :func:`modelseal.load`."""
        header = self.header
        fw = framework or default_framework(header.framework)
        if fw not in FRAMEWORKS:
            raise UnsupportedAlgorithmError(
                f"unknown framework {fw!r}; choose one of {', '.join(FRAMEWORKS)}"
            )
        if configure is not None and fw != "paddle":
            raise TypeError(f"configure= applies to framework 'paddle', not {fw!r}")
        if fw == "bytes":
            if header.kind == "file" and entry is None:
                return self._reader.read_all().tobytes()
            if entry is not None:
                return self.read(entry)
            return {e.path: self._reader.read_entry(e).tobytes() for e in self.entries}
        hint = header.framework
        if fw in ("torch", "numpy") and hint == "safetensors":
            shards = (
                [self._entry(entry, (".safetensors",))]
                if entry is not None
                else [e for e in self.entries if e.path.lower().endswith(".safetensors")]
            )
            # Decrypt all shards first; tensors are views into these buffers.
            buffers = [self._reader.read_entry(e) for e in shards]
            tensors: dict[str, Any] = {}
            for shard, buf in zip(shards, buffers, strict=True):
                for name, value in st_loader.load_buffer(buf, fw).items():
                    if name in tensors:
                        raise LoaderError(f"tensor {name!r} appears in two shards ({shard.path})")
                    tensors[name] = value
            return tensors
        if fw == "torch" and hint in ("torch", "torchscript", "bytes"):
            # torch copies every record into its own storage, so it reads from a
            # decrypting stream instead of a decrypted copy of the whole file.
            stream = self._reader.entry_stream(self._entry(entry, None))
            try:
                if hint == "torchscript":
                    obj = torch_loader.load_torchscript(stream)
                else:
                    obj = torch_loader.load_checkpoint(stream, weights_only=weights_only)
                stream.verify_rest()
            except ModelsealError:
                if stream.failure is not None:
                    raise stream.failure from None
                raise
            except Exception:
                # torch may wrap our integrity error in its own exception type
                if stream.failure is not None:
                    raise stream.failure from None
                raise
            return obj
        if fw == "onnxruntime":
            graph = self._entry(entry, (".onnx",))
            external = {
                e.path: self._reader.read_entry(e)
                for e in self.entries
                if e is not graph
                and header.kind == "directory"
                and not e.path.lower().endswith(".onnx")
            }
            model = self._reader.read_entry(graph)
            # External data locations are relative to the graph's directory.
            prefix = graph.path.rsplit("/", 1)[0] + "/" if "/" in graph.path else ""
            rel = {p[len(prefix) :]: b for p, b in external.items() if p.startswith(prefix)}
            return onnx_loader.create_session(model, rel)
        if fw == "paddle":
            return paddle_loader.load_predictor(
                self.entries, self._reader.read_entry_into, entry=entry, configure=configure
            )
        raise LoaderError(f"a sealed {hint!r} model cannot be loaded as {fw!r}")


def open(path: PathLike, *, key: KeyLike) -> SealedModel:
    """Open a sealed model for lazy reads; checks key, header and length now."""
    return SealedModel(path, key)


def load(
    path: PathLike,
    *,
    key: KeyLike | None = None,
    license: str | os.PathLike[str] | None = None,
    trust: Any = None,
    framework: str | None = None,
    entry: str | None = None,
    weights_only: bool = True,
    configure: Callable[[Any], None] | None = None,
    **guard_options: Any,
) -> Any:
    """Decrypt ``path`` in memory and return the framework object.

    Either ``key`` (the content key itself) or ``license`` + ``trust`` (a
    license file and the vendor's public key(s)): then a :class:`Guard`
    verifies the license, its dates and device binding, opens the content
    key from the license on this device, and only then decrypts.
    ``guard_options`` (``state_dir``, ``source``...) go to the Guard.

    ``framework``: ``"torch"`` (state dict; the module for TorchScript),
    ``"numpy"`` (dict of arrays, safetensors), ``"onnxruntime"``
    (``InferenceSession``), ``"paddle"`` (predictor) or ``"bytes"`` (the file,
    or {relative path: bytes} for a directory). ``None`` follows the header's
    framework hint (safetensors: torch when installed, else numpy).

    ``entry`` picks one model in a container of several (Paddle: a program's
    file, stem or folder, e.g. ``"det"``). ``configure`` is called with the
    framework's configuration before the model object is built (Paddle: the
    ``paddle.inference.Config``, for GPU, MKLDNN, threads, TensorRT...).
    """
    if license is not None:
        if key is not None:
            raise TypeError("give key= or license=, not both")
        if trust is None:
            raise TypeError("license= needs trust= (the vendor's public key file)")
        from modelseal.guard import Guard
        from modelseal.sealed import read_header

        if "audience" not in guard_options:
            # the product is the sealed model being loaded: a license for another
            # product is refused before anything is decrypted
            header = read_header(path)
            guard_options["audience"] = header.model_id or header.key_id
        guard = Guard(license, trust, **guard_options)
        return guard.load(
            path, framework, entry=entry, weights_only=weights_only, configure=configure
        )
    if key is None:
        raise TypeError("load() needs key= or license= and trust=")
    with SealedModel(path, key) as model:
        return model.load(framework, entry=entry, weights_only=weights_only, configure=configure)
