from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import modelseal
from modelseal.crypto import ContentKey
from modelseal.errors import LoaderError
from modelseal.loaders.onnx import create_session, external_locations

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


# --- issue #8 item 14: external data only from the container -------------------------


def _external_graph(location: str, nbytes: int, name: str = "secret") -> onnx.ModelProto:
    """A graph returning the bytes of ``location`` as its output: the hostile one."""
    tensor = TensorProto(name=name, data_type=TensorProto.UINT8, dims=[nbytes])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], ["out"])],
        "leak",
        [],
        [helper.make_tensor_value_info("out", TensorProto.UINT8, [nbytes])],
        initializer=[tensor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_graph_cannot_read_a_file_of_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = b"AWS_SECRET_ACCESS_KEY=hunter2\n"
    work = tmp_path / "service"
    work.mkdir()
    (work / ".env").write_bytes(secret)
    (tmp_path / "leak.onnx").write_bytes(_external_graph(".env", len(secret)).SerializeToString())
    modelseal.seal(tmp_path / "leak.onnx", tmp_path / "leak.mseal", key=KEY)
    monkeypatch.chdir(work)
    with pytest.raises(LoaderError, match="not in the sealed container"):
        modelseal.load(tmp_path / "leak.mseal", key=KEY, framework="onnxruntime")


def test_missing_external_data_is_not_completed_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _w, _b = _model()
    src = tmp_path / "bundle"
    src.mkdir()
    onnx.save_model(
        model,
        str(src / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    # the data file moves to the CWD instead of the container
    (tmp_path / "weights.bin").write_bytes((src / "weights.bin").read_bytes())
    (src / "weights.bin").unlink()
    (src / "notes.txt").write_text("the container is a directory")
    modelseal.seal(src, tmp_path / "m.mseal", key=KEY)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LoaderError, match=r"'weights\.bin' is not in the sealed container"):
        modelseal.load(tmp_path / "m.mseal", key=KEY, framework="onnxruntime")


@pytest.mark.parametrize("location", ["../etc/passwd", "/etc/passwd", "a/../../x", "C:\\x", "."])
def test_external_locations_outside_the_graph_directory_are_refused(location: str) -> None:
    data = _external_graph(location, 4).SerializeToString()
    with pytest.raises(LoaderError):
        create_session(data, {"x": np.zeros(4, np.uint8)})


def test_dot_slash_locations_name_container_entries(tmp_path: Path) -> None:
    payload = np.frombuffer(b"abcd", np.uint8)
    data = _external_graph("./sub/../w.bin", 4).SerializeToString()
    assert external_locations(data) == {"./sub/../w.bin"}
    session = create_session(data, {"w.bin": payload})
    np.testing.assert_array_equal(session.run(None, {})[0], payload)


def test_external_references_in_attributes_and_subgraphs_are_found() -> None:
    inner = _external_graph("inner.bin", 2, name="inner")
    const = helper.make_node("Constant", [], ["c"], value=inner.graph.initializer[0])
    branch = helper.make_graph(
        [const], "b", [], [helper.make_tensor_value_info("c", TensorProto.UINT8, [2])]
    )
    node = helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert external_locations(model.SerializeToString()) == {"inner.bin"}
    with pytest.raises(LoaderError, match="not in the sealed container"):
        create_session(model.SerializeToString(), {})


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_garbage_that_mentions_location_is_a_loader_error(head: bytes, tail: bytes) -> None:
    try:
        found = external_locations(head + b"location" + tail)
    except LoaderError:
        return
    assert isinstance(found, set)
