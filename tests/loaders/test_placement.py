"""``device=`` / ``map_location=``: parsing, CPU loads, refusals without CUDA,
and the torch side of the copy ring (run on the CPU here, on CUDA where present)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

import modelseal
from modelseal.crypto import ContentKey
from modelseal.errors import DeviceUnavailableError, InvalidArgumentError, LoaderError
from modelseal.loaders.placement import CPU, Placement, resolve, safetensors_to_device
from modelseal.sealed import SealedReader

KEY = ContentKey(bytes(32))
CUDA = torch.cuda.is_available()
no_cuda = pytest.mark.skipif(CUDA, reason="tests the refusal on a machine without CUDA")
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (runs on GPU machines)")


def _state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "embed.weight": torch.randn(300, 64, generator=g),
        "half": torch.randn(33, generator=g).to(torch.float16),
        "bf16": torch.randn(17, 3, generator=g).to(torch.bfloat16),
        "counts": torch.arange(11, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "fp8": torch.randn(8, generator=g).to(torch.float8_e4m3fn),
        "u16": torch.arange(5, dtype=torch.int32).to(torch.uint16),
    }


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


@pytest.fixture
def sealed_st(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = _state_dict()
    save_file(sd, str(tmp_path / "m.safetensors"))
    modelseal.seal(tmp_path / "m.safetensors", tmp_path / "m.mseal", key=KEY, chunk_size=1024)
    return tmp_path / "m.mseal", sd


# --- parsing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, CPU),
        ("cpu", CPU),
        (" CPU ", CPU),
        ("cpu:0", CPU),
        ("cuda", Placement("cuda")),
        ("cuda:1", Placement("cuda", 1)),
        (3, Placement("cuda", 3)),
        (torch.device("cpu"), CPU),
        (torch.device("cuda", 2), Placement("cuda", 2)),
    ],
)
def test_device_names(given: Any, expected: Placement) -> None:
    assert resolve(given) == expected
    assert resolve(map_location=given) == expected


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:-1", "cpu:1", "mps", "", "cuda:0:1", -1])
def test_unknown_devices_are_usage_errors(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        resolve(bad)
    assert info.value.exit_code == 2 and isinstance(info.value, ValueError)


@given(st.one_of(st.text(max_size=12), st.integers(-5, 5), st.from_regex(r"(cpu|cuda)(:\d{1,3})?")))
def test_any_device_value_parses_or_is_refused_typed(value: Any) -> None:
    try:
        where = resolve(value)
    except InvalidArgumentError:
        return
    assert where.kind in ("cpu", "cuda")
    assert resolve(str(where)) == where  # the canonical name round-trips


@pytest.mark.parametrize("bad", [{"cuda:0": "cpu"}, lambda s, loc: s, True, 1.0])
def test_non_device_values_are_usage_errors(bad: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        resolve(bad)


def test_device_and_map_location_together_refused(sealed_st: Any) -> None:
    path, _ = sealed_st
    with pytest.raises(InvalidArgumentError, match="not both"):
        modelseal.load(path, key=KEY, device="cpu", map_location="cpu")


# --- device="cpu" --------------------------------------------------------------


@pytest.mark.parametrize(
    "how", [{"device": "cpu"}, {"map_location": "cpu"}, {"device": torch.device("cpu")}]
)
def test_cpu_load_of_safetensors(sealed_st: Any, how: dict[str, Any]) -> None:
    path, sd = sealed_st
    loaded = modelseal.load(path, key=KEY, **how)
    assert set(loaded) == set(sd)
    for name, tensor in sd.items():
        assert loaded[name].device.type == "cpu"
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape
        assert torch.equal(_bits(loaded[name]), _bits(tensor)), name


def test_cpu_load_of_checkpoint_and_torchscript(tmp_path: Path) -> None:
    net = torch.nn.Linear(4, 3)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    modelseal.seal(tmp_path / "net.pt", tmp_path / "net.mseal", key=KEY, chunk_size=1024)
    sd = modelseal.load(tmp_path / "net.mseal", key=KEY, map_location=torch.device("cpu"))
    for k, v in net.state_dict().items():
        assert sd[k].device.type == "cpu" and torch.equal(sd[k], v)
    torch.jit.save(torch.jit.script(net), str(tmp_path / "net.ts"))
    modelseal.seal(tmp_path / "net.ts", tmp_path / "ts.mseal", key=KEY, chunk_size=1024)
    with pytest.warns(modelseal.UnsafeCodeWarning):
        module = modelseal.load(
            tmp_path / "ts.mseal", key=KEY, framework="torchscript", device="cpu"
        )
    x = torch.randn(2, 4)
    assert torch.equal(module(x), net(x))


# --- refusals ----------------------------------------------------------------


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0", 0, "cuda:1"])
def test_cuda_refused_without_cuda_for_safetensors(sealed_st: Any, device: Any) -> None:
    path, _ = sealed_st
    with pytest.raises(DeviceUnavailableError, match="CUDA is not available"):
        modelseal.load(path, key=KEY, device=device)
    with pytest.raises(DeviceUnavailableError):
        modelseal.load(path, key=KEY, map_location=device)


@no_cuda
def test_cuda_refused_without_cuda_for_checkpoint_and_torchscript(tmp_path: Path) -> None:
    net = torch.nn.Linear(4, 3)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    modelseal.seal(tmp_path / "net.pt", tmp_path / "net.mseal", key=KEY)
    torch.jit.save(torch.jit.script(net), str(tmp_path / "net.ts"))
    modelseal.seal(tmp_path / "net.ts", tmp_path / "ts.mseal", key=KEY)
    for path, fw in ((tmp_path / "net.mseal", "torch"), (tmp_path / "ts.mseal", "torchscript")):
        with pytest.raises(DeviceUnavailableError) as info:
            modelseal.load(path, key=KEY, framework=fw, device="cuda")
        assert info.value.exit_code == LoaderError.exit_code


def test_host_memory_frameworks_refuse_cuda(sealed_st: Any) -> None:
    path, _ = sealed_st
    for fw in ("numpy", "bytes"):
        with pytest.raises(LoaderError, match="host memory"):
            modelseal.load(path, key=KEY, framework=fw, device="cuda")
    assert modelseal.load(path, key=KEY, framework="bytes", device="cpu")[:8]


def test_onnx_options_pass_through_and_cuda_is_refused(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from tests.loaders.test_onnx import _model

    model, w, b = _model()
    onnx.save_model(model, str(tmp_path / "m.onnx"))
    modelseal.seal(tmp_path / "m.onnx", tmp_path / "m.mseal", key=KEY)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = False
    session = modelseal.load(
        tmp_path / "m.mseal",
        key=KEY,
        providers=["CPUExecutionProvider"],
        session_options=options,
        device="cpu",
    )
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 1
    x = np.ones((2, 64), np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x @ w + b, rtol=1e-5)
    with pytest.raises(InvalidArgumentError, match="not both"):
        modelseal.load(tmp_path / "m.mseal", key=KEY, device="cuda", providers=["X"])
    with pytest.raises(InvalidArgumentError, match="onnxruntime"):
        modelseal.load(tmp_path / "m.mseal", key=KEY, framework="bytes", providers=["X"])
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(DeviceUnavailableError, match="onnxruntime-gpu"):
            modelseal.load(tmp_path / "m.mseal", key=KEY, device="cuda:0")


PADDLE_REFUSAL = textwrap.dedent(
    """
    import paddle
    from modelseal.errors import DeviceUnavailableError
    from modelseal.loaders.paddle import load_predictor
    from modelseal.sealed import Entry

    entries = [Entry("inference.pdmodel", 0, 10), Entry("inference.pdiparams", 10, 10)]

    def read_into(entry, view):
        raise AssertionError("decrypted although the GPU is missing")

    if paddle.device.is_compiled_with_cuda():
        print("has-cuda")
    else:
        try:
            load_predictor(entries, read_into, gpu=0)
        except DeviceUnavailableError as exc:
            print("refused:", exc)
    """
)


def test_paddle_cuda_refused_before_decrypting() -> None:
    pytest.importorskip("paddle")
    out = subprocess.run(
        [sys.executable, "-c", PADDLE_REFUSAL], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    if out.stdout.startswith("has-cuda"):
        pytest.skip("this Paddle has CUDA")
    assert out.stdout.startswith("refused:") and "paddlepaddle-gpu" in out.stdout


# --- the torch copier and safetensors_to_device ----------------------------------


def _unaligned_safetensors(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """A safetensors file whose F32 tensor starts at an odd offset (legal, but rare)."""
    a = np.arange(3, dtype=np.uint8)
    b = np.linspace(0, 1, 700, dtype=np.float32)
    header = {
        "a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
        "b": {"dtype": "F32", "shape": [700], "data_offsets": [3, 3 + b.nbytes]},
    }
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + a.tobytes() + b.tobytes())
    return {"a": a, "b": b}


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_ring_to_torch_tensors_matches_the_cpu_load(sealed_st: Any, workers: int) -> None:
    path, sd = sealed_st
    with SealedReader(path, KEY, workers=workers) as reader:
        entry = reader.header.entries[0]
        ringed = safetensors_to_device(reader, entry, torch.device("cpu"))
    for name, tensor in sd.items():
        assert ringed[name].dtype == tensor.dtype and ringed[name].shape == tensor.shape
        assert torch.equal(_bits(ringed[name]), _bits(tensor)), name
    # views share one buffer: the device copy is the only copy
    storages = {t.untyped_storage().data_ptr() for t in ringed.values() if t.numel()}
    assert len(storages) == 1


def test_ring_copes_with_unaligned_tensors(tmp_path: Path) -> None:
    expected = _unaligned_safetensors(tmp_path / "u.safetensors")
    modelseal.seal(tmp_path / "u.safetensors", tmp_path / "u.mseal", key=KEY, chunk_size=1024)
    with SealedReader(tmp_path / "u.mseal", KEY) as reader:
        ringed = safetensors_to_device(reader, reader.header.entries[0], torch.device("cpu"))
    for name, array in expected.items():
        np.testing.assert_array_equal(ringed[name].numpy(), array)
    assert torch.equal(modelseal.load(tmp_path / "u.mseal", key=KEY)["b"], ringed["b"])


def test_ring_refuses_a_tampered_entry(sealed_st: Any) -> None:
    path, _ = sealed_st
    raw = bytearray(path.read_bytes())
    raw[-300] ^= 0x10
    path.write_bytes(bytes(raw))
    with SealedReader(path, KEY) as reader, pytest.raises(modelseal.ChunkIntegrityError):
        safetensors_to_device(reader, reader.header.entries[0], torch.device("cpu"))


@no_cuda
def test_guard_load_passes_device_through(tmp_path: Path) -> None:
    from modelseal.crypto import generate_private_key
    from tests.guard_core.test_guard import FakeClock, _guard, _license
    from tests.license.conftest import NOW

    save_file({"w": torch.arange(12, dtype=torch.float32)}, str(tmp_path / "m.safetensors"))
    cek = modelseal.seal(tmp_path / "m.safetensors", tmp_path / "m.mseal", model_id="acme/ocr")
    vendor = generate_private_key("ed25519")
    guard = _guard(vendor, _license(vendor, cek), tmp_path, FakeClock(NOW))
    with pytest.raises(DeviceUnavailableError):
        guard.load(tmp_path / "m.mseal", "torch", device="cuda")
    loaded = guard.load(tmp_path / "m.mseal", "torch", map_location="cpu")
    assert torch.equal(loaded["w"], torch.arange(12, dtype=torch.float32))


# --- on a GPU machine ------------------------------------------------------------


@needs_cuda
def test_cuda_checkpoint_lands_on_the_device(tmp_path: Path) -> None:
    net = torch.nn.Linear(4, 3)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    modelseal.seal(tmp_path / "net.pt", tmp_path / "net.mseal", key=KEY, chunk_size=1024)
    sd = modelseal.load(tmp_path / "net.mseal", key=KEY, map_location="cuda:0")
    for k, v in net.state_dict().items():
        assert sd[k].device == torch.device("cuda", 0) and torch.equal(sd[k].cpu(), v)


@needs_cuda
def test_cuda_load_is_bit_exact_and_on_the_device(sealed_st: Any) -> None:
    path, sd = sealed_st
    loaded = modelseal.load(path, key=KEY, device="cuda")
    for name, tensor in sd.items():
        assert loaded[name].device.type == "cuda", name
        assert torch.equal(_bits(loaded[name]), _bits(tensor)), name


# --- the CUDA branch of the torch copier, with fake CUDA operations --------------


class _FakeEvent:
    def __init__(self, seq: int) -> None:
        self.seq = seq


class FakeCudaOps:
    """CudaCopyOps for a machine without a GPU: copies complete only when waited for.

    A copy queued with :meth:`copy_async` reads its pinned source when its
    event (or a later one: a stream is in order) is waited for, or at
    :meth:`synchronize`, as an asynchronous DMA would. A ring that refilled a
    slot before waiting for that slot's event would put the refill's bytes
    on the "device", and the final-bytes check fails.
    """

    def __init__(self) -> None:
        self.pinned_sizes: list[int] = []
        self.queue: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.done = 0
        self.seq = 0
        self.log: list[str] = []
        self.in_flight_at_wait: list[int] = []

    def pinned(self, size: int) -> torch.Tensor:
        self.pinned_sizes.append(size)
        return torch.empty(size, dtype=torch.uint8)

    def copy_async(self, dst: torch.Tensor, src: torch.Tensor) -> _FakeEvent:
        self.seq += 1
        self.queue.append((self.seq, dst, src))  # views: read when completed
        self.log.append(f"copy {self.seq}")
        return _FakeEvent(self.seq)

    def _complete_to(self, seq: int) -> None:
        while self.queue and self.queue[0][0] <= seq:
            _, dst, src = self.queue.pop(0)
            dst.copy_(src)
            self.done += 1

    def wait(self, event: _FakeEvent) -> None:
        self.log.append(f"wait {event.seq}")
        self.in_flight_at_wait.append(len(self.queue))
        self._complete_to(event.seq)

    def synchronize(self) -> None:
        self.log.append("synchronize")
        self._complete_to(self.seq)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_cuda_branch_waits_for_a_slots_copy_before_refilling_it(
    tmp_path: Path, workers: int
) -> None:
    from modelseal.loaders.placement import TorchDeviceCopier

    chunk = 1024
    data = np.random.default_rng(5).integers(0, 256, chunk * 17 + 100, dtype=np.uint8)
    (tmp_path / "w.bin").write_bytes(data.tobytes())
    modelseal.seal(tmp_path / "w.bin", tmp_path / "w.mseal", key=KEY, chunk_size=chunk)
    ops = FakeCudaOps()
    with SealedReader(tmp_path / "w.mseal", KEY, workers=workers) as reader:
        dest = torch.full((len(data) - 200,), 0xEE, dtype=torch.uint8)
        copier = TorchDeviceCopier(dest, chunk, reader.ring_slots(), ops=ops)
        reader.copy_to_device(100, len(data) - 200, copier)
    # the final bytes, although every copy completed late
    assert bytes(dest.numpy()) == data[100:-100].tobytes()
    assert not ops.queue and ops.done == ops.seq == 17 and ops.log[-1] == "synchronize"
    # host memory is the ring: one pinned chunk-sized buffer per slot, no more
    assert ops.pinned_sizes == [chunk] * reader.ring_slots() == [chunk] * 2 * workers
    # a slot is refilled only after its own copy's event: copy k's slot was
    # last used by copy k - slots, and that copy is waited for before copy k
    slots = reader.ring_slots()
    for k in range(slots + 1, ops.seq + 1):
        assert ops.log.index(f"wait {k - slots}") < ops.log.index(f"copy {k}")
    # overlap: when a slot is waited for, the copies of the wave after it are
    # still in flight (decryption of a wave ran while the last one copied)
    if workers > 1:
        assert max(ops.in_flight_at_wait) >= workers


def test_cpu_ring_holds_host_memory_at_the_ring_not_the_model(tmp_path: Path) -> None:
    """A 64 MiB payload sent to a device through the ring raises host RSS by about the ring.

    The "device" is torch's meta device (no memory at all), so what the
    process holds is what the ring and the reader hold: the ciphertext pages
    are dropped from the mapping as they are read.
    """
    payload = tmp_path / "w.bin"
    payload.write_bytes(np.random.default_rng(6).bytes(64 << 20))
    modelseal.seal(payload, tmp_path / "w.mseal", key=KEY)
    payload.unlink()
    code = textwrap.dedent(
        f"""
        import torch
        from modelseal.crypto import ContentKey
        from modelseal.loaders.placement import TorchDeviceCopier
        from modelseal.sealed import SealedReader

        def status(field):
            for line in open("/proc/self/status"):
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

        with SealedReader({str(tmp_path / "w.mseal")!r}, ContentKey(bytes(32)), workers=2) as r:
            size = r.header.payload_size
            dest = torch.empty(size, dtype=torch.uint8, device="meta")
            base = status("VmRSS")
            copier = TorchDeviceCopier(dest, r.header.chunk_size, r.ring_slots())
            r.copy_to_device(0, size, copier)
            print(status("VmHWM") - base, r.ring_slots() * r.header.chunk_size, size)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    grown, ring, size = map(int, out.stdout.split())
    assert ring <= 8 << 20 and size == 64 << 20
    # the ring, plus the chunk being read and allocator slack: far from the model
    assert grown < ring + (12 << 20), (grown, ring)
