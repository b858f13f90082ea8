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

from modelseal.errors import DeviceUnavailableError, LoaderError, MissingDependencyError

_CUDA = "CUDAExecutionProvider"


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
    providers: list[Any] | None = None,
    cuda_device: int | None = None,
) -> Any:
    """``InferenceSession`` from the model bytes and {relative path: bytes} of its data files.

    ``providers`` and ``session_options`` go to ONNX Runtime unchanged.
    ``cuda_device`` (from ``device="cuda:N"``) asks for the CUDA execution
    provider on that device, with the CPU provider behind it for the nodes
    CUDA has no kernel for (ONNX Runtime's per-node placement); a session
    that ends up without CUDA is refused, because ONNX Runtime would
    otherwise fall back to the CPU with only a log line.
    """
    ort = _ort()
    if cuda_device is not None:
        if providers is not None:
            raise TypeError("give device= or providers=, not both")
        if _CUDA not in ort.get_available_providers():
            raise DeviceUnavailableError(
                f"device='cuda:{cuda_device}' was requested but this ONNX Runtime has no "
                f"{_CUDA} (install onnxruntime-gpu); pass device='cpu' to run on the CPU"
            )
        providers = [(_CUDA, {"device_id": cuda_device}), "CPUExecutionProvider"]
    options = session_options or ort.SessionOptions()
    if external:
        names = list(external)
        buffers = [np.ascontiguousarray(external[n]).view(np.uint8) for n in names]
        options.add_external_initializers_from_files_in_memory(
            names, buffers, [int(b.nbytes) for b in buffers]
        )
    try:
        session = ort.InferenceSession(
            bytes(memoryview(model).cast("B")),
            sess_options=options,
            providers=providers or ["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        if type(exc).__module__.startswith("onnxruntime"):
            raise LoaderError(f"ONNX Runtime could not load the model: {exc}") from None
        raise
    if cuda_device is not None and _CUDA not in session.get_providers():
        raise DeviceUnavailableError(
            f"ONNX Runtime could not start {_CUDA} on device {cuda_device} "
            "(driver, CUDA or cuDNN libraries missing?); pass device='cpu' to run on the CPU"
        )
    return session
