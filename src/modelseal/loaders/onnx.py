"""ONNX Runtime sessions from decrypted memory, external data included.

Large ONNX models keep their weights in external data files referenced by
relative path from the graph. ONNX Runtime (1.18+) takes those files as
in-memory buffers through
``SessionOptions.add_external_initializers_from_files_in_memory``, so the
graph and its weights load without any file on disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from modelseal.errors import LoaderError, MissingDependencyError


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError(
            "framework 'onnxruntime' needs ONNX Runtime: pip install 'modelseal[onnx]'"
        ) from None
    return onnxruntime


def create_session(
    model: Any,
    external: Mapping[str, np.ndarray[Any, Any]] | None = None,
    *,
    session_options: Any = None,
    providers: list[str] | None = None,
) -> Any:
    """``InferenceSession`` from the model bytes and {relative path: bytes} of its data files."""
    ort = _ort()
    options = session_options or ort.SessionOptions()
    if external:
        names = list(external)
        buffers = [np.ascontiguousarray(external[n]).view(np.uint8) for n in names]
        options.add_external_initializers_from_files_in_memory(
            names, buffers, [int(b.nbytes) for b in buffers]
        )
    try:
        return ort.InferenceSession(
            bytes(memoryview(model).cast("B")),
            sess_options=options,
            providers=providers or ["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        if type(exc).__module__.startswith("onnxruntime"):
            raise LoaderError(f"ONNX Runtime could not load the model: {exc}") from None
        raise
