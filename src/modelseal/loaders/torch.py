"""PyTorch checkpoints and TorchScript modules from decrypted memory."""

from __future__ import annotations

import pickle
import warnings
from typing import Any

from modelseal.errors import LoaderError
from modelseal.loaders._memio import MemoryReader
from modelseal.loaders._memio import import_torch as _torch


class UnsafePickleWarning(UserWarning):
    """Full pickle loading was requested: the checkpoint can run arbitrary code."""


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
    if not weights_only:
        warnings.warn(
            "loading a checkpoint with full pickle (weights_only=False): it can execute "
            "arbitrary code; only do this for checkpoints you trust",
            UnsafePickleWarning,
            stacklevel=3,
        )
    try:
        return torch.load(
            _source(buffer), map_location=map_location or "cpu", weights_only=weights_only
        )
    except pickle.UnpicklingError as exc:
        raise LoaderError(
            "the checkpoint holds objects that weights_only loading refuses; if you trust "
            f"it, load with weights_only=False ({str(exc).splitlines()[0]})"
        ) from None
    except (RuntimeError, ValueError, EOFError) as exc:
        raise LoaderError(f"torch.load failed: {str(exc).splitlines()[0]}") from None


def load_torchscript(buffer: Any, *, map_location: Any = None) -> Any:
    torch = _torch()
    try:
        return torch.jit.load(_source(buffer), map_location=map_location or "cpu")
    except (RuntimeError, ValueError) as exc:
        raise LoaderError(f"torch.jit.load failed: {str(exc).splitlines()[0]}") from None
