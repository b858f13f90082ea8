"""PyTorch checkpoints and TorchScript modules from decrypted memory."""

from __future__ import annotations

import pickle
import warnings
from typing import Any

from modelseal.errors import CodeExecutionRefusedError, LoaderError
from modelseal.loaders._memio import MemoryReader
from modelseal.loaders._memio import import_torch as _torch


class UnsafePickleWarning(UserWarning):
    """Full pickle loading was requested: the checkpoint can run arbitrary code."""


class UnsafeCodeWarning(UnsafePickleWarning):
    """A TorchScript archive is being loaded: it is a program and runs as one.

    A subclass of :class:`UnsafePickleWarning`, so a filter for one covers both.
    """


def _is_torchscript(source: Any) -> bool:
    """Whether ``source`` is a TorchScript archive, by the test ``torch.load`` itself applies.

    ``torch.load`` hands such an archive to ``torch.jit.load`` (with
    ``weights_only=False``), whose ``__setstate__`` methods run TorchScript
    code: it can read and create files. So the check runs on the decrypted
    bytes before ``torch.load`` and whatever the sealer's hint says. torch's
    own zip reader is asked (no parser differential with what ``torch.load``
    would see), and Python's zipfile too: either one seeing TorchScript
    refuses.
    """
    import zipfile

    torch = _torch()
    start = source.tell()
    try:
        head = source.read(4)
        source.seek(start)
        if head[:2] != b"PK":
            return False  # not a zip: a legacy pickle, which torch.load never hands to jit
        try:
            with zipfile.ZipFile(source) as zf:
                for name in zf.namelist():
                    inner = name.split("/", 1)[-1]
                    if inner == "constants.pkl" or inner.startswith("code/"):
                        return True
        except (zipfile.BadZipFile, ValueError, OSError):
            pass
        source.seek(start)
        serialization = torch.serialization
        opener = getattr(serialization, "_open_zipfile_reader", None)
        check = getattr(serialization, "_is_torchscript_zip", None)
        if opener is None or check is None:
            return False
        try:
            with opener(source) as reader:
                return bool(check(reader))
        except (RuntimeError, ValueError, OSError):
            return False  # torch.load cannot read it either
    finally:
        source.seek(start)


def _source(buffer: Any) -> Any:
    return buffer if hasattr(buffer, "readinto") else MemoryReader(buffer)


def load_checkpoint(buffer: Any, *, weights_only: bool = True, map_location: Any = None) -> Any:
    """``torch.load`` from memory or a decrypting stream; ``weights_only=True`` by default.

    A sealed file only proves who sealed it, not that its pickle is harmless,
    so full pickle loading needs ``weights_only=False`` and always warns.
    ``map_location`` (a ``torch.device``, default the CPU) is where torch
    moves each storage as it reads it, so on a GPU the host holds one
    storage at a time, not the model.
    """
    torch = _torch()
    source = _source(buffer)
    if _is_torchscript(source):
        raise CodeExecutionRefusedError(
            "this checkpoint is a TorchScript archive, which is code; framework='torch' "
            "never runs it (load with framework='torchscript' if you trust it)"
        )
    if not weights_only:
        warnings.warn(
            "loading a checkpoint with full pickle (weights_only=False): it can execute "
            "arbitrary code; only do this for checkpoints you trust",
            UnsafePickleWarning,
            stacklevel=3,
        )
    try:
        return torch.load(source, map_location=map_location or "cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        raise LoaderError(
            "the checkpoint holds objects that weights_only loading refuses; if you trust "
            f"it, load with weights_only=False ({str(exc).splitlines()[0]})"
        ) from None
    except (RuntimeError, ValueError, EOFError) as exc:
        raise LoaderError(f"torch.load failed: {str(exc).splitlines()[0]}") from None


def load_torchscript(buffer: Any, *, map_location: Any = None) -> Any:
    """``torch.jit.load`` from memory: runs the archive's code, so it always warns.

    Reached only through an explicit ``framework="torchscript"``.
    """
    torch = _torch()
    warnings.warn(
        "loading a TorchScript archive: it is a program (its __setstate__ and methods "
        "run as code, and can read and write files); only do this for models you trust",
        UnsafeCodeWarning,
        stacklevel=3,
    )
    try:
        return torch.jit.load(_source(buffer), map_location=map_location or "cpu")
    except (RuntimeError, ValueError) as exc:
        raise LoaderError(f"torch.jit.load failed: {str(exc).splitlines()[0]}") from None
