"""modelseal: ship AI models to machines you don't control.

Seal model files into ``.mseal`` containers, load them from memory only::

    import modelseal
    modelseal.seal("model.safetensors", "model.mseal", key_out="model.key")
    state_dict = modelseal.load("model.mseal", key="model.key", framework="torch")

The names below load on first use (PEP 562), so ``import modelseal`` is
cheap: the CLI installs its Ctrl-C handler before anything heavy imports,
and a process that needs only ``modelseal.errors`` pays for nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelseal.errors import (
    ChunkIntegrityError,
    CodeExecutionRefusedError,
    DecryptionError,
    DeviceUnavailableError,
    FormatError,
    HeaderIntegrityError,
    IntegrityError,
    InvalidArgumentError,
    InvalidSignatureError,
    KeyFileError,
    KeyMaterialError,
    LoaderError,
    MissingDependencyError,
    ModelsealError,
    OutputError,
    OutputExistsError,
    TrailingDataError,
    TruncatedError,
    UnsupportedAlgorithmError,
    UnsupportedVersionError,
    WrongKeyError,
)

if TYPE_CHECKING:
    from modelseal.api import SealedModel, inspect, load, open, seal, verify
    from modelseal.crypto import ContentKey
    from modelseal.loaders import UnsafeCodeWarning, UnsafePickleWarning

__version__ = "0.1.0"

_LAZY = {
    "SealedModel": "modelseal.api",
    "inspect": "modelseal.api",
    "load": "modelseal.api",
    "open": "modelseal.api",
    "seal": "modelseal.api",
    "verify": "modelseal.api",
    "ContentKey": "modelseal.crypto",
    "UnsafeCodeWarning": "modelseal.loaders",
    "UnsafePickleWarning": "modelseal.loaders",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelseal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ChunkIntegrityError",
    "CodeExecutionRefusedError",
    "ContentKey",
    "DecryptionError",
    "DeviceUnavailableError",
    "FormatError",
    "HeaderIntegrityError",
    "IntegrityError",
    "InvalidArgumentError",
    "InvalidSignatureError",
    "KeyFileError",
    "KeyMaterialError",
    "LoaderError",
    "MissingDependencyError",
    "ModelsealError",
    "OutputError",
    "OutputExistsError",
    "SealedModel",
    "TrailingDataError",
    "TruncatedError",
    "UnsafeCodeWarning",
    "UnsafePickleWarning",
    "UnsupportedAlgorithmError",
    "UnsupportedVersionError",
    "WrongKeyError",
    "__version__",
    "inspect",
    "load",
    "open",
    "seal",
    "verify",
]
