"""The OIP v2 codec: JSON and binary tensors both ways; junk is always a 400-class error."""

from __future__ import annotations

import contextlib
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelseal.serve.protocol import (
    DATATYPES,
    InferenceRequestError,
    InferRequest,
    encode_infer_response,
    parse_infer_request,
)


def test_json_tensors_of_every_numeric_type_round_trip() -> None:
    for datatype, dtype in [
        ("FP32", np.float32),
        ("INT64", np.int64),
        ("BOOL", np.bool_),
        ("UINT8", np.uint8),
        ("FP16", np.float16),
        ("FP64", np.float64),
    ]:
        arr = np.arange(6).reshape(2, 3).astype(dtype)
        body = json.dumps(
            {
                "id": "a",
                "inputs": [
                    {
                        "name": "x",
                        "datatype": datatype,
                        "shape": [2, 3],
                        "data": arr.reshape(-1).tolist(),
                    }
                ],
            }
        ).encode()
        req = parse_infer_request(body, None)
        assert req.id == "a"
        np.testing.assert_array_equal(req.inputs["x"], arr)
        assert req.inputs["x"].dtype == dtype


def test_binary_inputs_and_outputs_as_tritonclient_sends_them() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    s = np.array([b"ab", b""], dtype=object)
    raw_s = b"".join(struct.pack("<I", len(v)) + v for v in s)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, 4],
                    "parameters": {"binary_data_size": x.nbytes},
                },
                {
                    "name": "s",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(raw_s)},
                },
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    req = parse_infer_request(head + x.tobytes() + raw_s, str(len(head)))
    np.testing.assert_array_equal(req.inputs["x"], x)
    assert list(req.inputs["s"]) == [b"ab", b""]
    body, n = encode_infer_response(
        model_name="m", model_version="1", request=req, outputs={"y": x * 2, "s": req.inputs["s"]}
    )
    assert n is not None
    doc = json.loads(body[:n])
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    assert sizes == [32, len(raw_s)]
    np.testing.assert_array_equal(np.frombuffer(body[n : n + 32], np.float32).reshape(2, 4), x * 2)
    assert body[n + 32 :] == raw_s


def test_requested_outputs_select_and_json_by_default() -> None:
    req = InferRequest(id=None, inputs={}, outputs={"b": False})
    body, n = encode_infer_response(
        model_name="m",
        model_version="1",
        request=req,
        outputs={"a": np.zeros(1), "b": np.array([[1, 2]], np.int32)},
    )
    assert n is None
    assert json.loads(body)["outputs"] == [
        {"name": "b", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}
    ]
    with pytest.raises(InferenceRequestError, match="unknown output"):
        encode_infer_response(
            model_name="m",
            model_version="1",
            request=InferRequest(None, {}, {"c": False}),
            outputs={},
        )


@pytest.mark.parametrize(
    ("body", "header", "match"),
    [
        (b"not json", None, "not JSON"),
        (b"{}", None, "inputs"),
        (b'{"inputs":[{"name":"x","datatype":"FP99","shape":[1],"data":[1]}]}', None, "datatype"),
        (b'{"inputs":[{"name":"x","datatype":"FP32","shape":[2],"data":[1]}]}', None, "fit shape"),
        (b'{"inputs":[{"name":"x","datatype":"FP32","shape":[-1],"data":[1]}]}', None, "shape"),
        (b'{"inputs":[{"name":"x","datatype":"INT8","shape":[1],"data":["a"]}]}', None, "not INT8"),
        (b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1]}]}', None, "no 'data'"),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1],'
            b'"parameters":{"binary_data_size":8}}]}abcd',
            "97",
            "out of range",
        ),
        (b'{"inputs":[]}xx', "13", "after the last input"),
        (b'{"inputs":[]}', "x", "not a number"),
        # review findings: each of these was a 500 with a traceback
        (b"[" * 200_000, None, "not JSON"),
        (b'{"inputs":[],"outputs":5}', None, "'outputs' must be a list"),
        (b'{"inputs":[],"outputs":true}', None, "'outputs' must be a list"),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1180591620717411303424],'
            b'"data":[1]}]}',
            None,
            "does not fit the request",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[4294967296,4294967296],'
            b'"data":[]}]}',
            None,
            "does not fit the request",
        ),
        (
            b'{"inputs":[{"name":"x","datatype":"BYTES","shape":[4294967296,4294967296],'
            b'"parameters":{"binary_data_size":0}}]}',
            None,
            "does not fit the request",
        ),
    ],
)
def test_malformed_requests(body: bytes, header: str | None, match: str) -> None:
    with pytest.raises(InferenceRequestError, match=match):
        parse_infer_request(body, header)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.one_of(st.none(), st.integers(-5, 400).map(str)))
def test_parser_never_raises_anything_else(body: bytes, header: str | None) -> None:
    with contextlib.suppress(InferenceRequestError):
        parse_infer_request(body, header)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "name": st.text(max_size=5),
                "datatype": st.sampled_from(["FP32", "INT64", "BYTES", "BOOL", "X"]),
                "shape": st.lists(st.integers(-1, 3), max_size=3),
                "data": st.lists(
                    st.one_of(st.integers(-300, 300), st.floats(), st.text(max_size=3)), max_size=8
                ),
            }
        ),
        max_size=3,
    )
)
def test_structured_junk_is_a_request_error(inputs: list[dict[str, object]]) -> None:
    with contextlib.suppress(InferenceRequestError):
        parse_infer_request(json.dumps({"inputs": inputs}).encode(), None)


def _one(datatype: str, data: object, shape: object = None) -> bytes:
    spec = {"name": "x", "datatype": datatype, "shape": shape or [1], "data": data}
    return json.dumps({"inputs": [spec]}).encode()


@pytest.mark.parametrize(
    ("datatype", "data", "match"),
    [
        # numpy alone would turn each of these into a plausible number
        ("FP32", ["1.5"], "not FP32"),
        ("FP32", [True], "true/false is not FP32"),
        ("INT32", [False], "true/false is not INT32"),
        ("FP32", [None], "not FP32"),
        ("FP64", [{"a": 1}], "not FP64"),
        ("INT32", [2.7], "whole numbers"),
        ("INT64", [1.0], "whole numbers"),
        ("UINT8", [256], "out of range"),
        ("UINT8", [-1], "out of range"),
        ("INT8", [-129], "out of range"),
        ("INT64", [2**64], "not INT64"),
        ("BOOL", [1], "BOOL data must be true/false"),
        ("BOOL", ["true"], "BOOL data must be true/false"),
    ],
)
def test_json_data_must_hold_the_datatypes_own_json_values(
    datatype: str, data: object, match: str
) -> None:
    """The protocol's JSON form carries JSON numbers (booleans for BOOL), never coerced."""
    with pytest.raises(InferenceRequestError, match=match):
        parse_infer_request(_one(datatype, data), None)


@pytest.mark.parametrize(
    ("datatype", "data", "shape", "expected"),
    [
        ("FP32", [1, 2.5], [2], [1.0, 2.5]),
        ("FP64", [[1, 2], [3, 4]], [2, 2], [[1.0, 2.0], [3.0, 4.0]]),
        ("INT64", [-(2**63), 2**63 - 1], [2], [-(2**63), 2**63 - 1]),
        ("UINT64", [2**64 - 1], [1], [2**64 - 1]),
        ("UINT8", [0, 255], [2], [0, 255]),
        ("BOOL", [True, False], [2], [True, False]),
        ("FP32", [], [0], []),
        ("FP32", [2**70], [1], [float(2**70)]),
    ],
)
def test_json_data_at_the_edges_of_each_datatype_is_accepted_exactly(
    datatype: str, data: object, shape: list[int], expected: object
) -> None:
    request = parse_infer_request(_one(datatype, data, shape), None)
    arr = request.inputs["x"]
    assert arr.dtype == DATATYPES[datatype]
    assert list(arr.shape) == shape
    assert arr.tolist() == expected
