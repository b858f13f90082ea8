"""modelseal: ship AI models to machines you don't control.

Seal model files into ``.mseal`` containers, load them from memory only::

    import modelseal
    key = modelseal.seal("model.safetensors", "model.mseal")
    key.save("model.key")
    state_dict = modelseal.load("model.mseal", key="model.key", framework="torch")
"""

from modelseal.api import SealedModel, inspect, load, open, seal, verify
from modelseal.crypto import ContentKey
from modelseal.errors import (
    ChunkIntegrityError,
    DecryptionError,
    DeviceUnavailableError,
    FormatError,
    HeaderIntegrityError,
    IntegrityError,
    InvalidSignatureError,
    KeyFileError,
    KeyMaterialError,
    LoaderError,
    MissingDependencyError,
    ModelsealError,
    TrailingDataError,
    TruncatedError,
    UnsupportedAlgorithmError,
    UnsupportedVersionError,
    WrongKeyError,
)
from modelseal.loaders import UnsafePickleWarning

__version__ = "0.1.0"

__all__ = [
    "ChunkIntegrityError",
    "ContentKey",
    "DecryptionError",
    "DeviceUnavailableError",
    "FormatError",
    "HeaderIntegrityError",
    "IntegrityError",
    "InvalidSignatureError",
    "KeyFileError",
    "KeyMaterialError",
    "LoaderError",
    "MissingDependencyError",
    "ModelsealError",
    "SealedModel",
    "TrailingDataError",
    "TruncatedError",
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
