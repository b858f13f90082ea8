from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import modelseal
from modelseal.crypto import ContentKey

KEY = ContentKey(bytes(32))


def _model() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, w, b


def test_single_file_onnx(tmp_path: Path) -> None:
    model, w, b = _model()
    onnx.save_model(model, str(tmp_path / "m.onnx"))
    modelseal.seal(tmp_path / "m.onnx", tmp_path / "m.mseal", key=KEY)
    session = modelseal.load(tmp_path / "m.mseal", key=KEY)
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ w + b, rtol=1e-5)


def test_onnx_with_external_data_in_a_subdirectory(tmp_path: Path) -> None:
    model, w, b = _model()
    src = tmp_path / "bundle"
    (src / "onnx").mkdir(parents=True)
    onnx.save_model(
        model,
        str(src / "onnx" / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    (src / "README.md").write_text("vendor notes")
    assert (src / "onnx" / "model.onnx.data").stat().st_size >= w.nbytes
    modelseal.seal(src, tmp_path / "m.mseal", key=KEY, chunk_size=1024)
    assert modelseal.inspect(tmp_path / "m.mseal").framework == "onnx"
    session = modelseal.load(tmp_path / "m.mseal", key=KEY, framework="onnxruntime")
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ w + b, rtol=1e-5, atol=1e-5)
