"""Framework loaders that take decrypted memory, never a plaintext file.

Each framework is optional: importing this package imports none of them;
a missing one is reported as :class:`MissingDependencyError` when used.
"""

from modelseal.loaders.memfile import MemoryFiles
from modelseal.loaders.onnx import create_session
from modelseal.loaders.paddle import create_predictor
from modelseal.loaders.safetensors import LazySafetensors, TensorInfo, TensorSlice
from modelseal.loaders.torch import (
    UnsafeCodeWarning,
    UnsafePickleWarning,
    load_checkpoint,
    load_torchscript,
)

#: What ``framework=`` accepts. ``torchscript`` runs code and is never a default.
FRAMEWORKS = ("torch", "torchscript", "numpy", "onnxruntime", "paddle", "bytes")

__all__ = [
    "FRAMEWORKS",
    "LazySafetensors",
    "MemoryFiles",
    "TensorInfo",
    "TensorSlice",
    "UnsafeCodeWarning",
    "UnsafePickleWarning",
    "create_predictor",
    "create_session",
    "load_checkpoint",
    "load_torchscript",
]
