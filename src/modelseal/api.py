"""The Python API: ``seal``, ``load``, ``open``, ``verify``, ``inspect``.

A thin façade: sealing is :mod:`modelseal.sealed`, opening and framework
loading is :mod:`modelseal.loaders.dispatch` (shared with the Guard, which
supplies the key a license opens on this device).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelseal._fs import check_output, publish, removed_on_failure, stage_file
from modelseal.crypto import ContentKey
from modelseal.errors import InvalidArgumentError
from modelseal.loaders.dispatch import KeyLike, SealedModel, content_key, default_framework
from modelseal.sealed import DEFAULT_CHUNK_SIZE, Header, SealedReader, read_header, seal_path

PathLike = str | os.PathLike[str]


def seal(
    src: PathLike,
    out: PathLike,
    *,
    key: KeyLike | None = None,
    key_out: PathLike | None = None,
    aead: str = "aes-256-gcm",
    model_id: str | None = None,
    framework: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
) -> ContentKey:
    """Seal a model file or directory into ``out``; returns the content key.

    Without ``key`` a fresh content key is generated. Give ``key_out`` to have
    it saved (mode 0600) *before* the container is written, so there is never
    a sealed file whose key was lost; a failed seal removes it again. Without
    ``key_out``, save the returned key yourself: it is the only way to open
    the file.

    ``out`` (and ``key_out``) must not exist unless ``overwrite=True``, and
    may never be one of the inputs.
    """
    if key is not None and key_out is not None:
        raise InvalidArgumentError("key_out= saves a new key; it cannot be combined with key=")
    inputs: list[PathLike | None] = [src]
    if key is not None and not isinstance(key, ContentKey):
        inputs.append(key)
    check_output(out, overwrite=overwrite, inputs=inputs)
    if key_out is not None:
        check_output(key_out, overwrite=overwrite, inputs=[*inputs, out])
    content = ContentKey.generate() if key is None else content_key(key)
    staged: list[Path] = []
    if key_out is not None:
        # The key is on disk (a staged temporary file, fsynced) before the
        # container exists: a missing folder or a read-only location fails
        # here, and a crash later leaves the key recoverable beside key_out.
        staged.append(stage_file(key_out, content.to_jwk_bytes(), mode=0o600, overwrite=overwrite))
    with removed_on_failure(*staged):
        seal_path(
            src,
            out,
            content,
            aead=aead,
            model_id=model_id,
            framework=framework,
            chunk_size=chunk_size,
            progress=progress,
            overwrite=overwrite,
        )
    if key_out is not None:
        try:
            publish(staged[0], key_out, overwrite=overwrite)
        except BaseException:
            # someone took key_out while we sealed: a container without its
            # key must not stay behind
            Path(out).unlink(missing_ok=True)
            raise
    return content


def inspect(path: PathLike) -> Header:
    """The public header; needs no key and authenticates nothing."""
    return read_header(path)


def verify(
    path: PathLike, *, key: KeyLike, progress: Callable[[int], None] | None = None
) -> Header:
    """Authenticate every chunk of ``path``; returns the header. Writes nothing."""
    with SealedReader(path, content_key(key)) as reader:
        reader.verify(progress=progress)
        return reader.header


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
    device: Any = None,
    map_location: Any = None,
    providers: list[Any] | None = None,
    session_options: Any = None,
    **guard_options: Any,
) -> Any:
    """Decrypt ``path`` in memory and return the framework object.

    Either ``key`` (the content key itself) or ``license`` + ``trust`` (a
    license file and the vendor's public key(s)): then a :class:`Guard`
    verifies the license, its dates and device binding, opens the content
    key from the license on this device, and only then decrypts.
    ``guard_options`` (``state_dir``, ``source``...) go to the Guard.

    ``framework``: ``"torch"`` (state dict or checkpoint; never runs
    TorchScript), ``"torchscript"`` (the module: TorchScript is code, so it
    runs only when asked for by name, with an ``UnsafeCodeWarning``),
    ``"numpy"`` (dict of arrays, safetensors), ``"onnxruntime"``
    (``InferenceSession``), ``"paddle"`` (predictor) or ``"bytes"`` (the file,
    or {relative path: bytes} for a directory). ``None`` follows the header's
    framework hint (safetensors: torch when installed, else numpy), except
    that a TorchScript hint is refused with ``CodeExecutionRefusedError``.

    ``entry`` picks one model in a container of several (Paddle: a program's
    file, stem or folder, e.g. ``"det"``). ``configure`` is called with the
    framework's configuration before the model object is built (Paddle: the
    ``paddle.inference.Config``, for GPU, MKLDNN, threads, TensorRT...).

    ``device`` (``map_location`` is accepted too, for ``torch.load`` habits):
    ``"cpu"`` (the default), ``"cuda"``, ``"cuda:N"``, an int or a
    ``torch.device``. Safetensors decrypt through a small ring of pinned
    host buffers straight into GPU memory; torch checkpoints and TorchScript
    map their storages there; ONNX Runtime gets its CUDA provider and
    Paddle its GPU flag. A CUDA device that is not usable raises
    :class:`DeviceUnavailableError`, never a quiet CPU load.
    ``providers`` and ``session_options`` go to ONNX Runtime unchanged.

    Wrong arguments raise :class:`InvalidArgumentError` (a ``ModelsealError``
    and a ``ValueError``), like every other failure here.
    """
    options: dict[str, Any] = {
        "entry": entry,
        "weights_only": weights_only,
        "configure": configure,
        "device": device,
        "map_location": map_location,
        "providers": providers,
        "session_options": session_options,
    }
    if license is not None:
        if key is not None:
            raise InvalidArgumentError("give key= or license=, not both")
        if trust is None:
            raise InvalidArgumentError("license= needs trust= (the vendor's public key file)")
        from modelseal.guard import Guard
        from modelseal.sealed import read_header

        if "audience" not in guard_options:
            # the product is the sealed model being loaded: a license for another
            # product is refused before anything is decrypted
            header = read_header(path)
            guard_options["audience"] = header.model_id or header.key_id
        guard = Guard(license, trust, **guard_options)
        return guard.load(path, framework, **options)
    if key is None:
        raise InvalidArgumentError("load() needs key= or license= and trust=")
    with SealedModel(path, key) as model:
        return model.load(framework, **options)


__all__ = ["SealedModel", "default_framework", "inspect", "load", "open", "seal", "verify"]
