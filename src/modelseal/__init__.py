"""modelseal: ship AI models to machines you don't control.

Seal model files into ``.mseal`` containers, load them from memory only::

    import modelseal
    modelseal.seal("model.safetensors", "model.mseal", key_out="model.key")
    state_dict = modelseal.load("model.mseal", key="model.key", framework="torch")
"""

from modelseal.api import SealedModel, inspect, load, open, seal, verify
from modelseal.crypto import ContentKey
from modelseal.errors import (
    ChunkIntegrityError,
    CodeExecutionRefusedError,
    DecryptionError,
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
from modelseal.loaders import UnsafeCodeWarning, UnsafePickleWarning

__version__ = "0.1.0"

__all__ = [
    "ChunkIntegrityError",
    "CodeExecutionRefusedError",
    "ContentKey",
    "DecryptionError",
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
