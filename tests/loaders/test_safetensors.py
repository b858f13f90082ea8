from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError
from safetensors.numpy import load as reference_load
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file as save_torch

import modelseal
from modelseal.crypto import ContentKey
from modelseal.errors import FormatError, LoaderError
from modelseal.loaders.safetensors import load_buffer
from modelseal.sealed import SealedReader

KEY = ContentKey(bytes(32))


def _state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(300, 64, generator=g),
        "layer.bias": torch.randn(64, generator=g).to(torch.float16),
        "layer.bf16": torch.randn(17, 3, generator=g).to(torch.bfloat16),
        "counts": torch.arange(11, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "fp8": torch.randn(8, generator=g).to(torch.float8_e4m3fn),
    }


def test_torch_roundtrip_bit_for_bit_with_all_dtypes(tmp_path: Path) -> None:
    sd = _state_dict()
    save_torch(sd, str(tmp_path / "m.safetensors"), metadata={"format": "pt"})
    modelseal.seal(tmp_path / "m.safetensors", tmp_path / "m.mseal", key=KEY, chunk_size=4096)
    loaded = modelseal.load(tmp_path / "m.mseal", key=KEY)  # hint -> torch
    assert set(loaded) == set(sd)
    for name, tensor in sd.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape
        raw = loaded[name].reshape(-1).view(torch.uint8)
        assert torch.equal(raw, tensor.reshape(-1).view(torch.uint8)), name
    # views are writable (a model can fine-tune in place) and independent of the file
    loaded["embed.weight"].add_(1)
    assert torch.equal(loaded["embed.weight"], sd["embed.weight"] + 1)
    assert (
        modelseal.load(tmp_path / "m.mseal", key=KEY, framework="bytes")
        == (tmp_path / "m.safetensors").read_bytes()
    )


def test_numpy_roundtrip_and_bf16_needs_torch(tmp_path: Path) -> None:
    arrays = {
        "a": np.random.default_rng(0).standard_normal((40, 7)).astype(np.float32),
        "b": np.arange(5, dtype=np.uint16),
    }
    save_numpy(arrays, str(tmp_path / "n.safetensors"))
    modelseal.seal(tmp_path / "n.safetensors", tmp_path / "n.mseal", key=KEY)
    loaded = modelseal.load(tmp_path / "n.mseal", key=KEY, framework="numpy")
    for k, v in arrays.items():
        np.testing.assert_array_equal(loaded[k], v)
    save_torch({"x": torch.ones(2, dtype=torch.bfloat16)}, str(tmp_path / "b.safetensors"))
    modelseal.seal(tmp_path / "b.safetensors", tmp_path / "b.mseal", key=KEY)
    with pytest.raises(LoaderError, match="framework='torch'"):
        modelseal.load(tmp_path / "b.mseal", key=KEY, framework="numpy")


def test_sharded_directory_merges_shards(tmp_path: Path) -> None:
    sd = _state_dict()
    names = sorted(sd)
    src = tmp_path / "model"
    src.mkdir()
    save_torch({n: sd[n] for n in names[:4]}, str(src / "model-00001-of-00002.safetensors"))
    save_torch({n: sd[n] for n in names[4:]}, str(src / "model-00002-of-00002.safetensors"))
    (src / "config.json").write_text('{"layers": 1}')
    modelseal.seal(src, tmp_path / "d.mseal", key=KEY, chunk_size=1024)
    loaded = modelseal.load(tmp_path / "d.mseal", key=KEY, framework="torch")
    assert set(loaded) == set(sd)
    files = modelseal.load(tmp_path / "d.mseal", key=KEY, framework="bytes")
    assert files["config.json"] == b'{"layers": 1}'
    one = modelseal.load(
        tmp_path / "d.mseal", key=KEY, framework="torch", entry="model-00002-of-00002.safetensors"
    )
    assert set(one) == set(names[4:])


def test_lazy_slice_decrypts_only_the_chunks_it_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = torch.randn(4096, 256)  # 4 MiB
    save_torch({"big": big, "small": torch.ones(3)}, str(tmp_path / "l.safetensors"))
    modelseal.seal(tmp_path / "l.safetensors", tmp_path / "l.mseal", key=KEY, chunk_size=1 << 16)
    opened: list[int] = []
    real = SealedReader._open_chunk

    def spy(self: SealedReader, index: int, out: memoryview) -> None:
        opened.append(index)
        real(self, index, out)

    monkeypatch.setattr(SealedReader, "_open_chunk", spy)
    with modelseal.open(tmp_path / "l.mseal", key=KEY) as m:
        view = m.safetensors()
        assert sorted(view.keys()) == ["big", "small"]
        opened.clear()
        rows = view.get_slice("big", framework="torch")[1000:1002]
        assert torch.equal(rows, big[1000:1002])
        assert len(opened) <= 2  # 2 KiB of rows: one chunk, two if it straddles
        opened.clear()
        assert torch.equal(view.get_slice("big", framework="torch")[5, 3:9], big[5, 3:9])
        assert torch.equal(view.get_slice("big", framework="torch")[-1], big[-1])
        np.testing.assert_array_equal(view.get_slice("big")[10:20:3, 1], big[10:20:3, 1].numpy())
        assert torch.equal(view.get_tensor("small", framework="torch"), torch.ones(3))
        with pytest.raises(LoaderError):
            view.get_tensor("nope")
        with pytest.raises(IndexError):
            view.get_slice("big")[4096]
    total_chunks = modelseal.inspect(tmp_path / "l.mseal").chunk_count
    assert total_chunks > 60


@pytest.mark.parametrize(
    "header",
    [
        b"not json",
        b"[]",
        b'{"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}',
        b'{"t": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}',
        b'{"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 999]}}',
    ],
)
def test_corrupt_safetensors_inside_a_valid_seal(tmp_path: Path, header: bytes) -> None:
    blob = len(header).to_bytes(8, "little") + header + bytes(8)
    (tmp_path / "c.safetensors").write_bytes(blob)
    modelseal.seal(tmp_path / "c.safetensors", tmp_path / "c.mseal", key=KEY)
    with pytest.raises(FormatError):
        modelseal.load(tmp_path / "c.mseal", key=KEY, framework="numpy")


# --- issue #8 item 15: parse exactly what the reference parses ------------------------


def _file(header: bytes | dict[str, object], data: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _ours(blob: bytes) -> dict[str, np.ndarray]:
    return load_buffer(np.frombuffer(blob, np.uint8), "numpy")


def _u8(begin: int, end: int) -> dict[str, object]:
    return {"dtype": "U8", "shape": [end - begin], "data_offsets": [begin, end]}


@pytest.mark.parametrize(
    ("header", "data"),
    [
        # two names, one range: a write through one would change the other
        ({"a": _u8(0, 4), "b": _u8(0, 4)}, b"abcd"),
        ({"a": _u8(0, 4), "b": _u8(2, 4)}, b"abcd"),
        ({"a": _u8(1, 4)}, b"abcd"),  # a gap
        ({"a": _u8(0, 3)}, b"abcd"),  # bytes after the last tensor
        ({"__metadata__": {"k": 1}, "a": _u8(0, 4)}, b"abcd"),
        ({"a": {"dtype": "U8", "shape": ["4"], "data_offsets": [0, 4]}}, b"abcd"),
    ],
)
def test_overlaps_gaps_and_loose_types_are_refused_like_the_reference(
    header: dict[str, object], data: bytes
) -> None:
    blob = _file(header, data)
    with pytest.raises(SafetensorError):
        reference_load(blob)
    with pytest.raises(FormatError):
        _ours(blob)


def test_duplicate_tensor_names_are_refused(tmp_path: Path) -> None:
    entry = json.dumps(_u8(0, 4))
    blob = _file(f'{{"w": {entry}, "w": {entry}}}'.encode(), b"abcd")
    with pytest.raises(FormatError, match="duplicate"):
        _ours(blob)
    # and through a sealed container
    (tmp_path / "dup.safetensors").write_bytes(blob)
    modelseal.seal(tmp_path / "dup.safetensors", tmp_path / "dup.mseal", key=KEY)
    with pytest.raises(FormatError):
        modelseal.load(tmp_path / "dup.mseal", key=KEY, framework="numpy")


_DTYPE_SIZES = {"U8": 1, "I16": 2, "F32": 4, "F64": 8}


@st.composite
def _headers(draw: st.DrawFn) -> tuple[dict[str, object], bytes]:
    """Headers whose ranges are often, but not always, a proper tiling of the data."""
    count = draw(st.integers(0, 4))
    header: dict[str, object] = {}
    cursor = 0
    for index in range(count):
        dtype = draw(st.sampled_from(sorted(_DTYPE_SIZES)))
        shape = draw(st.lists(st.integers(0, 3), max_size=2))
        size = math.prod(shape) * _DTYPE_SIZES[dtype]
        begin = cursor + draw(st.sampled_from([0, 0, 0, -1, 1, -size]))
        end = begin + size + draw(st.sampled_from([0, 0, 0, 1, -1]))
        header[f"t{index}"] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
        cursor = max(cursor, end)
    extra = draw(st.sampled_from([0, 0, 1]))
    return header, bytes(max(cursor, 0) + extra)


@settings(max_examples=300, deadline=None)
@given(_headers())
def test_accepts_exactly_what_the_reference_accepts(case: tuple[dict[str, object], bytes]) -> None:
    blob = _file(*case)
    try:
        expected = reference_load(blob)
    except Exception:
        expected = None
    try:
        got = _ours(blob)
    except FormatError:
        got = None
    assert (got is None) == (expected is None), case
    if got is not None and expected is not None:
        assert set(got) == set(expected)
        for name, array in expected.items():
            np.testing.assert_array_equal(got[name], array)
