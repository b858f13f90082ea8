"""Opening a sealed model and loading it into a framework: the one place it happens.

Both the plain API (:mod:`modelseal.api`, with a content key) and the
Guard (:mod:`modelseal.guard`, with a key a license opens on this device)
open models through :class:`SealedModel`; neither imports the other for
it. This module sits above ``sealed`` and the framework loaders and below
both of them.

Loading decrypts everything it needs and authenticates every chunk before
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
from modelseal.errors import (
    CodeExecutionRefusedError,
    InvalidArgumentError,
    LoaderError,
    ModelsealError,
    UnsupportedAlgorithmError,
)
from modelseal.loaders import FRAMEWORKS, placement
from modelseal.loaders import onnx as onnx_loader
from modelseal.loaders import paddle as paddle_loader
from modelseal.loaders import safetensors as st_loader
from modelseal.loaders import torch as torch_loader
from modelseal.loaders.safetensors import LazySafetensors
from modelseal.sealed import Entry, Header, SealedReader

KeyLike = ContentKey | str | os.PathLike[str]
PathLike = str | os.PathLike[str]


def content_key(key: KeyLike) -> ContentKey:
    """A :class:`ContentKey`, loading it from a JWK file when given a path."""
    if isinstance(key, ContentKey):
        return key
    return ContentKey.load(key)


def default_framework(hint: str) -> str:
    """The framework ``framework=None`` means for a header's hint.

    Never ``torchscript``: a TorchScript archive is a program, and running
    it is the caller's explicit decision, not the sealer's hint.
    """
    if hint == "safetensors":
        return "torch" if importlib.util.find_spec("torch") is not None else "numpy"
    if hint == "torchscript":
        raise CodeExecutionRefusedError(
            "this sealed model is a TorchScript archive, which is code: load it with "
            "framework='torchscript' if you trust who sealed it"
        )
    return {
        "torch": "torch",
        "onnx": "onnxruntime",
        "paddle": "paddle",
    }.get(hint, "bytes")


class SealedModel:
    """An opened sealed model: entries, lazy reads, and framework loading.

    >>> with modelseal.open("model.mseal", key="model.key") as m:
    ...     row = m.safetensors().get_slice("embed.weight")[1000:1001]
    """

    def __init__(self, path: PathLike, key: KeyLike) -> None:
        self._reader = SealedReader(path, content_key(key))

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
        device: Any = None,
        map_location: Any = None,
        providers: list[Any] | None = None,
        session_options: Any = None,
    ) -> Any:
        """The framework object; see :func:`modelseal.load`."""
        header = self.header
        fw = framework or default_framework(header.framework)
        if fw not in FRAMEWORKS:
            raise UnsupportedAlgorithmError(
                f"unknown framework {fw!r}; choose one of {', '.join(FRAMEWORKS)}"
            )
        if configure is not None and fw != "paddle":
            raise InvalidArgumentError(f"configure= applies to framework 'paddle', not {fw!r}")
        if (providers is not None or session_options is not None) and fw != "onnxruntime":
            raise InvalidArgumentError(
                f"providers= and session_options= apply to 'onnxruntime', not {fw!r}"
            )
        where = placement.resolve(device, map_location)
        if fw in ("bytes", "numpy"):
            placement.refuse_non_cpu(where, fw)
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
            parts: list[dict[str, Any]]
            if where.is_cuda:
                # straight to the device through the copy ring (loaders/placement.py)
                target = placement.require_torch_device(where)
                parts = [placement.safetensors_to_device(self._reader, e, target) for e in shards]
            else:
                # Decrypt all shards first; tensors are views into these buffers.
                buffers = [self._reader.read_entry(e) for e in shards]
                parts = [st_loader.load_buffer(buf, fw) for buf in buffers]
            tensors: dict[str, Any] = {}
            for shard, part in zip(shards, parts, strict=True):
                for name, value in part.items():
                    if name in tensors:
                        raise LoaderError(f"tensor {name!r} appears in two shards ({shard.path})")
                    tensors[name] = value
            return tensors
        if fw == "torch" and hint == "torchscript":
            # refused before a byte is decrypted: see docs/threat-model.md
            raise CodeExecutionRefusedError(
                "framework='torch' never runs TorchScript, and this sealed model is a "
                "TorchScript archive: load it with framework='torchscript' if you trust it"
            )
        if fw in ("torch", "torchscript") and hint in ("torch", "torchscript", "bytes"):
            # torch copies every record into its own storage, so it reads from a
            # decrypting stream instead of a decrypted copy of the whole file.
            target = placement.require_torch_device(where)
            stream = self._reader.entry_stream(self._entry(entry, None))
            try:
                if fw == "torchscript":
                    obj = torch_loader.load_torchscript(stream, map_location=target)
                else:
                    # refuses an archive that is TorchScript whatever the hint says
                    obj = torch_loader.load_checkpoint(
                        stream, weights_only=weights_only, map_location=target
                    )
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
            if where.is_cuda:
                if providers is not None:
                    raise InvalidArgumentError("give device= or providers=, not both")
                onnx_loader.require_cuda(where.cuda_index)  # before decrypting anything
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
            return onnx_loader.create_session(
                model,
                rel,
                session_options=session_options,
                providers=providers,
                cuda_device=where.cuda_index if where.is_cuda else None,
            )
        if fw == "paddle":
            return paddle_loader.load_predictor(
                self.entries,
                self._reader.read_entry_into,
                entry=entry,
                configure=configure,
                gpu=where.cuda_index if where.is_cuda else None,
            )
        raise LoaderError(f"a sealed {hint!r} model cannot be loaded as {fw!r}")


__all__ = ["FRAMEWORKS", "KeyLike", "SealedModel", "content_key", "default_framework"]
