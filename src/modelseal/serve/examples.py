"""Two example handlers (docs/serve.md); the tests serve models through both.

``SoftmaxClassifier`` post-processes an ONNX classifier: it runs the session
and adds class probabilities and the top class. ``NumpyLinear`` serves a
sealed safetensors state dict (``{"weight", "bias"}``) with plain numpy:
a handler for a model that no runtime executes by itself.

    modelseal serve model.mseal --license L --trust vendor.pub \\
        --handler modelseal.serve.examples:SoftmaxClassifier
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelseal.serve.handlers import HandlerError, OnnxHandler, check_inputs
from modelseal.serve.protocol import TensorSpec


class SoftmaxClassifier:
    """ONNX logits -> ``probabilities`` (FP32) and ``label`` (INT64, argmax)."""

    platform = "onnxruntime_onnx"

    def __init__(self) -> None:
        self._onnx = OnnxHandler()
        self.inputs: tuple[TensorSpec, ...] = ()
        self.outputs: tuple[TensorSpec, ...] = ()

    def load(self, model: Any) -> None:
        self._onnx.load(model)
        if len(self._onnx.outputs) != 1:
            raise HandlerError("SoftmaxClassifier needs a model with exactly one output (logits)")
        self.inputs = self._onnx.inputs
        logits = self._onnx.outputs[0]
        self.outputs = (
            TensorSpec("probabilities", "FP32", logits.shape),
            TensorSpec("label", "INT64", logits.shape[:-1]),
        )

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        (logits,) = self._onnx.predict(inputs).values()
        z = logits - logits.max(axis=-1, keepdims=True)
        e = np.exp(z)
        probs = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
        return {"probabilities": probs, "label": probs.argmax(axis=-1).astype(np.int64)}


class NumpyLinear:
    """``y = x @ weight + bias`` from a sealed safetensors state dict, in numpy."""

    platform = "modelseal_numpy"

    def __init__(self) -> None:
        self.weight: np.ndarray[Any, Any] | None = None
        self.bias: np.ndarray[Any, Any] | None = None
        self.inputs: tuple[TensorSpec, ...] = ()
        self.outputs: tuple[TensorSpec, ...] = ()

    def load(self, model: Any) -> None:
        if not isinstance(model, dict) or "weight" not in model or "bias" not in model:
            raise HandlerError("NumpyLinear needs a safetensors file with 'weight' and 'bias'")
        self.weight = np.asarray(model["weight"], dtype=np.float32)
        self.bias = np.asarray(model["bias"], dtype=np.float32)
        n_in, n_out = self.weight.shape
        self.inputs = (TensorSpec("x", "FP32", (-1, n_in)),)
        self.outputs = (TensorSpec("y", "FP32", (-1, n_out)),)

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        if self.weight is None or self.bias is None:
            raise HandlerError("NumpyLinear.predict() before load()")
        x = check_inputs(self.inputs, inputs)["x"]
        return {"y": (x @ self.weight + self.bias).astype(np.float32)}
