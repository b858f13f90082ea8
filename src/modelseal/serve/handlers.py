"""Handlers: what turns named input arrays into named output arrays.

A handler is any class with ``load(self, model)`` (given what
:func:`modelseal.load` returns for the sealed file: an ONNX Runtime session,
a TorchScript module, a state dict...) and ``predict(self, inputs) ->
outputs`` over ``dict[str, numpy.ndarray]``. Optional attributes
``inputs`` and ``outputs`` (sequences of :class:`TensorSpec`) and
``platform`` fill the model metadata. The built-in handlers for ONNX
sessions and TorchScript modules are the default.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from modelseal.errors import ModelsealError
from modelseal.serve.protocol import DATATYPES, InferenceRequestError, TensorSpec


class HandlerError(ModelsealError):
    """A handler cannot be imported, built or loaded (the service does not start)."""

    exit_code = 2


@runtime_checkable
class Handler(Protocol):
    def load(self, model: Any) -> None: ...

    def predict(
        self, inputs: dict[str, np.ndarray[Any, Any]]
    ) -> dict[str, np.ndarray[Any, Any]]: ...


_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def _dims(shape: Sequence[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def check_inputs(
    specs: Sequence[TensorSpec], inputs: dict[str, np.ndarray[Any, Any]]
) -> dict[str, np.ndarray[Any, Any]]:
    """Inputs by name, dtype and shape against the metadata: a clear 400, not a crash."""
    out: dict[str, np.ndarray[Any, Any]] = {}
    for spec in specs:
        if spec.name not in inputs:
            raise InferenceRequestError(f"missing input {spec.name!r}")
        arr = inputs[spec.name]
        want = DATATYPES[spec.datatype]
        if spec.datatype == "BYTES":
            arr = arr.astype(object)
        elif arr.dtype != want:
            if not np.can_cast(arr.dtype, want, casting="same_kind"):
                raise InferenceRequestError(
                    f"input {spec.name!r} is {arr.dtype}, the model takes {spec.datatype}"
                )
            arr = arr.astype(want)
        if len(arr.shape) != len(spec.shape) or any(
            d >= 0 and d != a for d, a in zip(spec.shape, arr.shape, strict=True)
        ):
            raise InferenceRequestError(
                f"input {spec.name!r} has shape {list(arr.shape)}, "
                f"the model takes {list(spec.shape)}"
            )
        out[spec.name] = arr
    extra = sorted(set(inputs) - {s.name for s in specs})
    if extra:
        raise InferenceRequestError(f"unknown input {extra[0]!r}")
    return out


class OnnxHandler:
    """An ONNX Runtime session: inputs, outputs, shapes and datatypes from the session."""

    platform = "onnxruntime_onnx"

    def __init__(self) -> None:
        self._session: Any = None
        self.inputs: tuple[TensorSpec, ...] = ()
        self.outputs: tuple[TensorSpec, ...] = ()

    def load(self, model: Any) -> None:
        self._session = model
        self.inputs = tuple(self._spec(a) for a in model.get_inputs())
        self.outputs = tuple(self._spec(a) for a in model.get_outputs())

    @staticmethod
    def _spec(arg: Any) -> TensorSpec:
        datatype = _ORT_TYPES.get(arg.type)
        if datatype is None:
            raise HandlerError(f"ONNX tensor {arg.name!r} has unsupported type {arg.type}")
        return TensorSpec(arg.name, datatype, _dims(arg.shape))

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        feed = check_inputs(self.inputs, inputs)
        try:
            results = self._session.run(None, feed)
        except Exception as exc:
            # ONNX Runtime raises its own classes for inputs it rejects at run time.
            if type(exc).__name__ in ("InvalidArgument", "Fail", "InvalidGraph"):
                raise InferenceRequestError(f"the model rejected the input: {exc}") from None
            raise
        return {spec.name: np.asarray(r) for spec, r in zip(self.outputs, results, strict=True)}


class TorchScriptHandler:
    """A TorchScript module called with the inputs in order (``input__0``, ``input__1``...),
    as Triton's PyTorch backend names them; outputs ``output__0``..."""

    platform = "pytorch_torchscript"

    def __init__(self) -> None:
        self._module: Any = None
        self.inputs: tuple[TensorSpec, ...] = ()
        self.outputs: tuple[TensorSpec, ...] = ()

    def load(self, model: Any) -> None:
        self._module = model.eval()

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        import torch

        names = sorted(inputs, key=_ordinal)
        tensors = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names]
        with torch.inference_mode():
            try:
                result = self._module(*tensors)
            except RuntimeError as exc:
                raise InferenceRequestError(f"the model rejected the input: {exc}") from None
        results = result if isinstance(result, list | tuple) else (result,)
        return {f"output__{i}": r.detach().cpu().numpy() for i, r in enumerate(results)}


def _ordinal(name: str) -> tuple[int, str]:
    tail = name.rsplit("__", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


def default_handler(model: Any) -> Handler:
    """The built-in handler for what :func:`modelseal.load` returned."""
    kind = f"{type(model).__module__}.{type(model).__name__}"
    if kind.startswith("onnxruntime.") and hasattr(model, "get_inputs"):
        return OnnxHandler()
    if kind.startswith("torch.jit.") or kind.startswith("torch._C.ScriptModule"):
        return TorchScriptHandler()
    raise HandlerError(
        f"no built-in handler for a {type(model).__name__}; give --handler pkg.module:Class"
    )


def import_handler(spec: str) -> Handler:
    """``pkg.module:Class`` -> a new instance; a one-line HandlerError when it is not one."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HandlerError(f"handler must be given as pkg.module:Class, not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerError(f"cannot import handler module {module_name!r}: {exc}") from None
    except Exception as exc:
        raise HandlerError(f"handler module {module_name!r} failed on import: {exc}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise HandlerError(f"module {module_name!r} has no {attr!r}")
    try:
        handler = cls()
    except Exception as exc:
        raise HandlerError(f"cannot construct handler {spec}: {exc}") from None
    if not isinstance(handler, Handler):
        raise HandlerError(f"{spec} needs load(model) and predict(inputs) methods")
    return handler
