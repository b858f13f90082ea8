"""The Open Inference Protocol (KServe v2) tensor codec: JSON tensors and Triton's
binary tensor extension. Pure functions over bytes and arrays.

Binary extension (what ``tritonclient`` sends by default): the body is a
JSON header of ``Inference-Header-Content-Length`` bytes followed by the
raw tensors in input order; an input's ``parameters.binary_data_size``
says how many bytes are its own. Outputs come back the same way when the
request asks for ``binary_data`` (per output) or ``binary_data_output``.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from modelseal.errors import ModelsealError

BINARY_HEADER: Final = "inference-header-content-length"

#: KServe v2 datatype -> numpy dtype. BYTES are object arrays of ``bytes``.
DATATYPES: Final[dict[str, np.dtype[Any]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_BY_KIND: Final = {dt.str.lstrip("<>|="): name for name, dt in DATATYPES.items() if name != "BYTES"}


class InferenceRequestError(ModelsealError):
    """The request does not follow the protocol or does not fit the model (HTTP 400)."""

    exit_code = 2


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the model metadata describes it (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray[Any, Any]]
    #: requested output names (empty: all) -> whether to send that one as binary
    outputs: dict[str, bool] = field(default_factory=dict)
    binary_default: bool = False


def datatype_of(arr: np.ndarray[Any, Any]) -> str:
    if arr.dtype == object or arr.dtype.kind in "SU":
        return "BYTES"
    name = _BY_KIND.get(arr.dtype.str.lstrip("<>|="))
    if name is None:
        raise InferenceRequestError(f"the model produced an unsupported dtype {arr.dtype}")
    return name


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise InferenceRequestError(f"{what}: shape must be a list of non-negative integers")
    return tuple(value)


def _decode_bytes_tensor(raw: bytes, count: int, what: str) -> np.ndarray[Any, Any]:
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(raw):
            raise InferenceRequestError(f"{what}: BYTES data truncated")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise InferenceRequestError(f"{what}: BYTES data truncated")
        out[i] = raw[pos : pos + n]
        pos += n
    if pos != len(raw):
        raise InferenceRequestError(f"{what}: BYTES data longer than its shape")
    return out


def _encode_bytes_tensor(arr: np.ndarray[Any, Any]) -> bytes:
    parts = []
    for item in arr.reshape(-1):
        b = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """Decode a ``/infer`` body into named arrays; any fault is an InferenceRequestError."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise InferenceRequestError("Inference-Header-Content-Length is not a number") from None
        if not 0 < n <= len(body):
            raise InferenceRequestError("Inference-Header-Content-Length out of range")
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InferenceRequestError("the request body is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise InferenceRequestError("the request needs an 'inputs' list")
    rid = doc.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InferenceRequestError("'id' must be a string")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise InferenceRequestError("'parameters' must be an object")
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    pos = 0
    for i, spec in enumerate(doc["inputs"]):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InferenceRequestError(f"inputs[{i}] needs a 'name'")
        name = spec["name"]
        what = f"input {name!r}"
        if name in inputs:
            raise InferenceRequestError(f"{what} appears twice")
        datatype = spec.get("datatype")
        if datatype not in DATATYPES:
            raise InferenceRequestError(f"{what}: unknown datatype {datatype!r}")
        dtype = DATATYPES[datatype]
        shape = _shape(spec.get("shape"), what)
        # Python ints: numpy's int64 product wraps, and a wrapped count could
        # pass the size checks below. No valid request holds more elements
        # than it has bytes, which also bounds every allocation by the body.
        count = math.prod(shape)
        if count > len(body):
            raise InferenceRequestError(f"{what}: shape {list(shape)} does not fit the request")
        p = spec.get("parameters") or {}
        size = p.get("binary_data_size") if isinstance(p, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or pos + size > len(binary):
                raise InferenceRequestError(f"{what}: binary_data_size out of range")
            raw = bytes(binary[pos : pos + size])
            pos += size
            if datatype == "BYTES":
                arr = _decode_bytes_tensor(raw, count, what)
            else:
                if size != count * dtype.itemsize:
                    raise InferenceRequestError(f"{what}: {size} bytes do not fit shape {shape}")
                arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False)
        else:
            if "data" not in spec:
                raise InferenceRequestError(f"{what} has no 'data'")
            try:
                if datatype == "BYTES":
                    flat = np.array(spec["data"], dtype=object).reshape(-1)
                    arr = np.array(
                        [x.encode("utf-8") if isinstance(x, str) else x for x in flat],
                        dtype=object,
                    )
                else:
                    arr = _json_numbers(spec["data"], datatype, dtype, what)
            except (ValueError, TypeError, OverflowError):
                raise InferenceRequestError(f"{what}: data is not {datatype}") from None
            if arr.size != count:
                raise InferenceRequestError(
                    f"{what}: {arr.size} values do not fit shape {list(shape)}"
                )
        try:
            inputs[name] = arr.reshape(shape)
        except ValueError:
            raise InferenceRequestError(f"{what}: data does not fit shape {list(shape)}") from None
    if pos != len(binary):
        raise InferenceRequestError("binary data after the last input")
    binary_default = bool(params.get("binary_data_output", False))
    outputs: dict[str, bool] = {}
    requested = doc.get("outputs")
    if requested is not None and not isinstance(requested, list):
        raise InferenceRequestError("'outputs' must be a list")
    for i, spec in enumerate(requested or []):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise InferenceRequestError(f"outputs[{i}] needs a 'name'")
        p = spec.get("parameters") or {}
        outputs[spec["name"]] = (
            bool(p.get("binary_data", binary_default)) if isinstance(p, dict) else binary_default
        )
    return InferRequest(rid, inputs, outputs, binary_default)


def _json_numbers(
    data: Any, datatype: str, dtype: np.dtype[Any], what: str
) -> np.ndarray[Any, Any]:
    """A JSON tensor's values as ``dtype``, refusing what numpy would silently coerce.

    ``np.asarray(data, dtype=...)`` alone turns ``"1.5"`` into 1.5, ``true``
    into 1, ``null`` into NaN and truncates 2.7 to 2 in an integer tensor: a
    malformed request would reach the model as plausible numbers. The
    protocol's JSON form holds JSON numbers (booleans for ``BOOL``), so the
    values' own types are checked before they are converted.
    """
    seen = np.asarray(data)
    kind = seen.dtype.kind
    if seen.size == 0:
        return np.empty(0, dtype=dtype)
    if kind == "O":
        # Python ints beyond 64 bits (numpy keeps them as objects); anything
        # else here (null, objects, mixed nesting) is not a number.
        if not all(type(x) is int for x in seen.reshape(-1)):
            raise InferenceRequestError(f"{what}: data is not {datatype}")
        with np.errstate(over="ignore"):
            return np.asarray(seen.reshape(-1).tolist(), dtype=dtype)
    if datatype == "BOOL":
        if kind != "b":
            raise InferenceRequestError(f"{what}: BOOL data must be true/false")
        return seen.reshape(-1)
    if kind == "b":
        raise InferenceRequestError(f"{what}: true/false is not {datatype}")
    if kind not in "iuf":
        raise InferenceRequestError(f"{what}: data is not {datatype}")
    flat = seen.reshape(-1)
    if dtype.kind in "iu":
        if kind == "f":
            raise InferenceRequestError(f"{what}: {datatype} data must be whole numbers")
        info = np.iinfo(dtype)
        if int(flat.min()) < info.min or int(flat.max()) > info.max:
            raise InferenceRequestError(f"{what}: a value is out of range for {datatype}")
    with np.errstate(over="ignore"):
        return flat.astype(dtype, copy=False)


def encode_infer_response(
    *,
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: dict[str, np.ndarray[Any, Any]],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow."""
    wanted = request.outputs or dict.fromkeys(outputs, request.binary_default)
    missing = [n for n in wanted if n not in outputs]
    if missing:
        raise InferenceRequestError(f"unknown output {missing[0]!r}")
    tensors = []
    blobs: list[bytes] = []
    for name, binary in wanted.items():
        arr = np.asarray(outputs[name])
        datatype = datatype_of(arr)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            if datatype == "BYTES":
                blob = _encode_bytes_tensor(arr)
            else:
                blob = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            entry["data"] = [
                x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
                for x in arr.reshape(-1)
            ]
        else:
            entry["data"] = arr.reshape(-1).tolist()
        tensors.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = tensors
    head = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
