"""ONNX Runtime sessions from decrypted memory, external data included.

Large ONNX models keep their weights in external data files referenced by
relative path from the graph. ONNX Runtime (1.18+) takes those files as
in-memory buffers through
``SessionOptions.add_external_initializers_from_files_in_memory``, so the
graph and its weights load without any file on disk.

External data comes only from the container. A graph loaded from bytes has
no directory, so ONNX Runtime resolves any external location it was not
given in memory against the process's *working directory*: a sealed graph
whose data file is missing from the container was completed from
``./weights.bin``, and a hostile graph could name ``.env`` as the data of an
initializer it returns as an output (issue #8, item 14). Before a session is
created every external reference in the graph (initializers, sparse
initializers, tensors in node attributes, subgraphs and functions) is listed
and must name an entry of the container; anything else is a
:class:`~modelseal.errors.LoaderError` and ONNX Runtime never sees the graph.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from modelseal.errors import (
    DeviceUnavailableError,
    InvalidArgumentError,
    LoaderError,
    MissingDependencyError,
)

_CUDA = "CUDAExecutionProvider"

#: The key of the external-data entry that names the file (ONNX's
#: ``external_data`` is a list of key/value pairs). A serialized graph whose
#: bytes do not contain it cannot reference external data at all.
_LOCATION = "location"


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError(
            "framework 'onnxruntime' needs ONNX Runtime: pip install 'modelseal[onnx]'"
        ) from None
    return onnxruntime


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError(
            "checking an ONNX graph's external data needs the onnx package: "
            "pip install 'modelseal[onnx]'"
        ) from None
    return onnx


def _graph_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Any) -> Iterator[Any]:
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices
            for sparse in attr.sparse_tensors:
                yield sparse.values
                yield sparse.indices
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _graph_tensors(sub)


def external_locations(model: bytes) -> set[str]:
    """Every external-data location the serialized graph refers to."""
    if _LOCATION.encode() not in model:
        return set()  # fast path: no tensor can name a file
    onnx = _onnx()
    try:
        proto = onnx.ModelProto()
        proto.ParseFromString(model)
    except Exception as exc:  # protobuf's DecodeError, and whatever else it raises
        raise LoaderError(f"not an ONNX model: {type(exc).__name__}") from None
    tensors = [*_graph_tensors(proto.graph)]
    for function in proto.functions:
        tensors.extend(_node_tensors(function.node))
    for training in proto.training_info:
        tensors.extend(_graph_tensors(training.initialization))
        tensors.extend(_graph_tensors(training.algorithm))
    found: set[str] = set()
    for tensor in tensors:
        for entry in tensor.external_data:
            if entry.key == _LOCATION:
                found.add(entry.value)
        if tensor.data_location == onnx.TensorProto.EXTERNAL and not any(
            e.key == _LOCATION for e in tensor.external_data
        ):
            raise LoaderError(f"tensor {tensor.name!r} is external but names no location")
    return found


def _container_buffers(
    model: bytes, external: Mapping[str, np.ndarray[Any, Any]]
) -> dict[str, np.ndarray[Any, Any]]:
    """{location as the graph spells it: buffer}; LoaderError for one not in ``external``."""
    by_norm = {posixpath.normpath(name): buf for name, buf in external.items()}
    out: dict[str, np.ndarray[Any, Any]] = {}
    for location in sorted(external_locations(model)):
        norm = posixpath.normpath(location.replace("\\", "/"))
        if (
            "\0" in location
            or norm.startswith(("/", "../"))
            or norm in ("..", ".")
            or (len(norm) > 1 and norm[1] == ":")
        ):
            raise LoaderError(f"external data location {location!r} leaves the model's directory")
        if norm not in by_norm:
            raise LoaderError(
                f"the graph's external data {location!r} is not in the sealed container; "
                "external data is read only from the container"
            )
        out[location] = by_norm[norm]
    return out


def require_cuda(cuda_device: int) -> None:
    """Refuse ``device="cuda:N"`` when this ONNX Runtime has no CUDA provider.

    Called before anything is decrypted, and again by :func:`create_session`.
    """
    if _CUDA not in _ort().get_available_providers():
        raise DeviceUnavailableError(
            f"device='cuda:{cuda_device}' was requested but this ONNX Runtime has no "
            f"{_CUDA} (install onnxruntime-gpu); pass device='cpu' to run on the CPU"
        )


def create_session(
    model: Any,
    external: Mapping[str, np.ndarray[Any, Any]] | None = None,
    *,
    session_options: Any = None,
    providers: list[Any] | None = None,
    cuda_device: int | None = None,
) -> Any:
    """``InferenceSession`` from the model bytes and {relative path: bytes} of its data files.

    Every external location in the graph must be a key of ``external``
    (paths are compared after normalisation, ``./w.bin`` is ``w.bin``).

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
            raise InvalidArgumentError("give device= or providers=, not both")
        require_cuda(cuda_device)
        providers = [(_CUDA, {"device_id": cuda_device}), "CPUExecutionProvider"]
    data = bytes(memoryview(model).cast("B"))
    buffers_by_name = _container_buffers(data, external or {})
    options = session_options or ort.SessionOptions()
    if buffers_by_name:
        names = list(buffers_by_name)
        buffers = [np.ascontiguousarray(buffers_by_name[n]).view(np.uint8) for n in names]
        options.add_external_initializers_from_files_in_memory(
            names, buffers, [int(b.nbytes) for b in buffers]
        )
    try:
        session = ort.InferenceSession(
            data,
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
