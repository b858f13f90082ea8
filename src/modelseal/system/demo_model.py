"""The demo model of ``modelseal up``: a small ONNX classifier with fixed weights.

Fixed literal weights (not a seeded generator) so the expected answer is the
same on every machine and numpy version: the self-check after start-up and
the test that curls the printed line compare against :func:`expected`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import numpy as np

MODEL_NAME: Final = "demo"
MODEL_ID: Final = "modelseal-demo/iris-classifier"
CLASSES: Final = ("setosa", "versicolor", "virginica")
#: A flower from the iris data set: sepal length/width, petal length/width (cm).
SAMPLE: Final = (5.1, 3.5, 1.4, 0.2)

_WEIGHTS: Final = (
    (0.42, 0.11, -0.53),
    (0.96, -0.31, -0.65),
    (-2.51, 0.12, 2.39),
    (-1.07, -0.82, 1.89),
)
_BIAS: Final = (0.25, 0.9, -2.15)


def expected(x: np.ndarray) -> np.ndarray:
    """Class probabilities for rows of ``x`` (shape ``(n, 4)``), as the model computes them."""
    logits = x.astype(np.float32) @ np.asarray(_WEIGHTS, np.float32) + np.asarray(_BIAS, np.float32)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: np.ndarray = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    return probabilities


def write_onnx(path: Path) -> None:
    """Write the classifier (``x: float32[n, 4] -> probabilities: float32[n, 3]``)."""
    from modelseal.errors import MissingDependencyError

    try:
        from onnx import TensorProto, helper, numpy_helper, save_model
    except ImportError:  # pragma: no cover - the onnx extra is part of the set-up
        raise MissingDependencyError(
            "the demo model is built with onnx: pip install 'modelseal[onnx]'"
        ) from None
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "iris_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
        initializer=[
            numpy_helper.from_array(np.asarray(_WEIGHTS, np.float32), "W"),
            numpy_helper.from_array(np.asarray(_BIAS, np.float32), "B"),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    save_model(proto, str(path))


__all__ = ["CLASSES", "MODEL_ID", "MODEL_NAME", "SAMPLE", "expected", "write_onnx"]
