"""safetensors from decrypted memory, without the ``safetensors`` package.

The format is 8 bytes of little-endian header length, a JSON header mapping
tensor names to dtype, shape and byte offsets, then the raw data. Parsing it
here lets every tensor be a *view* into the one buffer the payload was
decrypted into, so a sealed load holds the weights in memory once; the
``safetensors`` package's ``load(bytes)`` would copy each tensor (measured
here: the plain file load peaks at twice the model's size).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from modelseal._json import StrictJSONError, strict_loads
from modelseal.errors import FormatError, LoaderError
from modelseal.loaders._memio import import_torch as _torch

MAX_HEADER: Final = 100 * 1024 * 1024

# safetensors dtype -> (numpy dtype to view the bytes with, exact numpy dtype or None)
_DTYPES: Final[dict[str, tuple[str, str | None]]] = {
    "F64": ("<f8", "<f8"),
    "F32": ("<f4", "<f4"),
    "F16": ("<f2", "<f2"),
    "BF16": ("<u2", None),
    "F8_E4M3": ("u1", None),
    "F8_E5M2": ("u1", None),
    "I64": ("<i8", "<i8"),
    "I32": ("<i4", "<i4"),
    "I16": ("<i2", "<i2"),
    "I8": ("i1", "i1"),
    "U64": ("<u8", "<u8"),
    "U32": ("<u4", "<u4"),
    "U16": ("<u2", "<u2"),
    "U8": ("u1", "u1"),
    "BOOL": ("?", "?"),
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SafetensorsIndex:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int


def _int_list(value: object) -> list[int] | None:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return None
    return value


def parse_header(read: Callable[[int, int], bytes], file_size: int) -> SafetensorsIndex:
    """Parse the header through ``read(offset, size)``; validates every offset.

    As strict as the reference implementation, so that no file means one
    thing here and another there (issue #8, item 15): duplicate names are
    refused (the reference keeps the last copy; two parsers could pick
    different ones), and the tensors' byte ranges, sorted, must tile the data
    section exactly: no overlap (two names aliasing one buffer), no gap and
    nothing after the last tensor.
    """
    if file_size < 8:
        raise FormatError("not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", read(0, 8))
    if n > MAX_HEADER or 8 + n > file_size:
        raise FormatError("safetensors header length out of range")
    try:
        obj = strict_loads(read(8, n))
    except StrictJSONError as exc:
        raise FormatError(f"safetensors header is not strict JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise FormatError("safetensors header is not a JSON object")
    data_start = 8 + n
    data_len = file_size - data_start
    meta_raw = obj.pop("__metadata__", None) or {}
    if not isinstance(meta_raw, dict) or not all(isinstance(v, str) for v in meta_raw.values()):
        raise FormatError("safetensors __metadata__ must map strings to strings")
    tensors: dict[str, TensorInfo] = {}
    for name, info in obj.items():
        if not isinstance(info, dict):
            raise FormatError(f"safetensors entry {name!r} is malformed")
        dtype, shape_raw, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        shape_list, offset_list = _int_list(shape_raw), _int_list(offsets)
        if shape_list is None or offset_list is None or len(offset_list) != 2:
            raise FormatError(f"safetensors entry {name!r} is malformed")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise FormatError(f"tensor {name!r} has unknown dtype {dtype!r}")
        shape = tuple(shape_list)
        begin, end = offset_list
        itemsize = np.dtype(_DTYPES[dtype][0]).itemsize
        if any(d < 0 for d in shape) or not 0 <= begin <= end <= data_len:
            raise FormatError(f"tensor {name!r} lies outside the data section")
        if math.prod(shape) * itemsize != end - begin:
            raise FormatError(f"tensor {name!r}: shape and byte size disagree")
        tensors[name] = TensorInfo(name, dtype, shape, data_start + begin, data_start + end)
    covered = data_start
    for info in sorted(tensors.values(), key=lambda t: (t.start, t.end)):
        if info.start != covered:
            raise FormatError(f"tensor {info.name!r} overlaps another tensor or leaves a gap")
        covered = info.end
    if covered != file_size:
        raise FormatError("safetensors data section has bytes no tensor covers")
    return SafetensorsIndex(tensors, dict(meta_raw), data_start)


def _numpy_view(buf: np.ndarray[Any, Any], info: TensorInfo, base: int) -> np.ndarray[Any, Any]:
    view_dtype = np.dtype(_DTYPES[info.dtype][0])
    raw = buf[info.start - base : info.end - base]
    if (raw.ctypes.data % view_dtype.itemsize) != 0:
        raw = raw.copy()  # unaligned tensor: a copy of this one tensor, not of the model
    return raw.view(view_dtype).reshape(info.shape)


def to_numpy(buf: np.ndarray[Any, Any], info: TensorInfo, base: int = 0) -> np.ndarray[Any, Any]:
    if _DTYPES[info.dtype][1] is None:
        raise LoaderError(
            f"tensor {info.name!r} is {info.dtype}, which numpy cannot represent; "
            "load with framework='torch'"
        )
    return _numpy_view(buf, info, base)


def to_torch(buf: np.ndarray[Any, Any], info: TensorInfo, base: int = 0) -> Any:
    torch = _torch()
    arr = _numpy_view(buf, info, base)
    special = {"BF16": torch.bfloat16, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
    if arr.size == 0:
        target = special.get(info.dtype) or torch.from_numpy(np.empty(0, arr.dtype)).dtype
        return torch.empty(info.shape, dtype=target)
    tensor = torch.from_numpy(arr)
    if info.dtype in special:
        tensor = tensor.view(special[info.dtype])
    return tensor


def _torch_dtypes(torch: Any) -> dict[str, Any]:
    return {
        "F64": torch.float64,
        "F32": torch.float32,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "F8_E4M3": torch.float8_e4m3fn,
        "F8_E5M2": torch.float8_e5m2,
        "I64": torch.int64,
        "I32": torch.int32,
        "I16": torch.int16,
        "I8": torch.int8,
        "U64": torch.uint64,
        "U32": torch.uint32,
        "U16": torch.uint16,
        "U8": torch.uint8,
        "BOOL": torch.bool,
    }


def to_device_tensor(dest: Any, info: TensorInfo, base: int = 0) -> Any:
    """A torch tensor viewing ``info``'s bytes in ``dest``, a uint8 tensor on any device.

    safetensors data is little-endian, as every CUDA device is. A tensor
    whose offset is not a multiple of its element size cannot be viewed
    (torch refuses the storage offset): that one tensor is copied on its
    device, never the model.
    """
    torch = _torch()
    dtype = _torch_dtypes(torch)[info.dtype]
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=dtype, device=dest.device)
    raw = dest[info.start - base : info.end - base]
    if (info.start - base) % dtype.itemsize:
        raw = raw.clone()
    return raw.view(dtype).reshape(info.shape)


def load_buffer(buf: np.ndarray[Any, Any], framework: str) -> dict[str, Any]:
    """All tensors of one safetensors file held in ``buf``, as views into it."""
    index = parse_header(lambda off, size: buf[off : off + size].tobytes(), len(buf))
    convert = to_torch if framework == "torch" else to_numpy
    return {name: convert(buf, info) for name, info in index.tensors.items()}


class TensorSlice:
    """``view.get_slice(name)[a:b]`` reads only the bytes of rows a..b."""

    def __init__(self, view: LazySafetensors, info: TensorInfo, framework: str) -> None:
        self._view, self._info, self._framework = view, info, framework

    @property
    def shape(self) -> tuple[int, ...]:
        return self._info.shape

    @property
    def dtype(self) -> str:
        return self._info.dtype

    def __getitem__(self, key: Any) -> Any:
        info = self._info
        first = key[0] if isinstance(key, tuple) else key
        rest = key[1:] if isinstance(key, tuple) else ()
        if not info.shape:
            return self._view.get_tensor(info.name, framework=self._framework)[key]
        rows = info.shape[0]
        if isinstance(first, int):
            idx = first + rows if first < 0 else first
            if not 0 <= idx < rows:
                raise IndexError(f"index {first} out of range for {rows} rows")
            lo, hi, step, squeeze = idx, idx + 1, 1, True
        elif isinstance(first, slice):
            lo, hi, step = first.indices(rows)
            squeeze = False
            if step < 0:
                raise LoaderError("negative steps are not supported in lazy slices")
            hi = max(lo, hi)
        else:
            raise LoaderError("lazy slices take an int or a slice on the first dimension")
        row_bytes = info.nbytes // rows if rows else 0
        sub = TensorInfo(
            info.name,
            info.dtype,
            (hi - lo, *info.shape[1:]),
            info.start + lo * row_bytes,
            info.start + hi * row_bytes,
        )
        buf = self._view._read(sub.start, sub.nbytes)
        convert = to_torch if self._framework == "torch" else to_numpy
        out = convert(buf, sub, sub.start)
        out = out[::step] if step != 1 else out
        if squeeze:
            out = out[0]
            return out[rest] if rest else out
        return out[(slice(None), *rest)] if rest else out


class LazySafetensors:
    """Tensors of a sealed safetensors file, decrypted on demand.

    Only the chunks a requested tensor (or row range) spans are decrypted.
    """

    def __init__(self, read_range: Callable[[int, int], np.ndarray[Any, Any]], size: int) -> None:
        self._read = read_range
        self._index = parse_header(lambda o, n: read_range(o, n).tobytes(), size)

    def keys(self) -> list[str]:
        return list(self._index.tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self._index.tensors)

    def __len__(self) -> int:
        return len(self._index.tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._index.tensors

    def metadata(self) -> dict[str, str]:
        return dict(self._index.metadata)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._index.tensors[name]
        except KeyError:
            raise LoaderError(f"no tensor named {name!r}") from None

    def get_tensor(self, name: str, *, framework: str = "numpy") -> Any:
        info = self.info(name)
        buf = self._read(info.start, info.nbytes)
        return (to_torch if framework == "torch" else to_numpy)(buf, info, info.start)

    def get_slice(self, name: str, *, framework: str = "numpy") -> TensorSlice:
        return TensorSlice(self, self.info(name), framework)
