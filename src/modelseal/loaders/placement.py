"""Where a loaded model lives: ``device=`` (and ``map_location=``) for every framework.

A GPU user should not decrypt the model into host memory and copy it again.
For sealed safetensors on CUDA, chunks decrypt into a small ring of pinned
host buffers and each is copied to its place in one device buffer on a
CUDA stream of its own, while the next chunks decrypt
(:meth:`SealedReader.copy_to_device`); the tensors are views into that
device buffer, so the GPU copy is the only full copy of the weights and host
memory stays at the ring's size. Torch checkpoints and TorchScript go through
``torch.load(map_location=...)`` / ``torch.jit.load``, which move each
storage as it is read. ONNX Runtime gets the CUDA execution provider and
Paddle its GPU flag.

A device that is asked for and absent is an error, never a quiet CPU load:
a model the caller believes is on the GPU but runs on the CPU is a
performance bug nobody notices until production.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from modelseal.errors import DeviceUnavailableError, InvalidArgumentError, LoaderError
from modelseal.loaders._memio import import_torch
from modelseal.loaders.safetensors import parse_header, to_device_tensor
from modelseal.sealed import Entry, SealedReader

_DEVICE = re.compile(r"(cpu|cuda)(?::(\d+))?")


@dataclass(frozen=True)
class Placement:
    """A parsed device: ``cpu`` or ``cuda`` with an optional index."""

    kind: str
    index: int | None = None

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def cuda_index(self) -> int:
        return self.index or 0

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"

    def torch_device(self) -> Any:
        return import_torch().device(str(self))


CPU = Placement("cpu")


def resolve(device: Any = None, map_location: Any = None) -> Placement:
    """The placement ``device=`` (or its torch-habit alias ``map_location=``) names.

    Accepts ``None`` (the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, an int
    (CUDA device N, as torch takes it) and a ``torch.device``; anything else
    is an :class:`InvalidArgumentError` (a usage error, exit 2). Only
    parses; whether the device exists is for the framework to say
    (:func:`require_torch_device` and the ONNX Runtime and Paddle loaders).
    """
    if device is not None and map_location is not None:
        raise InvalidArgumentError("give device= or map_location=, not both")
    value = device if device is not None else map_location
    if value is None:
        return CPU
    if isinstance(value, bool):
        raise InvalidArgumentError(
            "device must be a string such as 'cuda:0', an int or a torch.device"
        )
    if isinstance(value, int):
        if value < 0:
            raise InvalidArgumentError(f"device index {value} is negative")
        return Placement("cuda", value)
    if type(value).__name__ == "device" and type(value).__module__.startswith("torch"):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidArgumentError(
            "device must be a string such as 'cuda:0', an int or a torch.device "
            f"(not {type(value).__name__}; a dict or callable map_location is not supported)"
        )
    m = _DEVICE.fullmatch(value.strip().lower())
    if m is None:
        raise InvalidArgumentError(f"unsupported device {value!r}: use 'cpu', 'cuda' or 'cuda:N'")
    index = int(m.group(2)) if m.group(2) is not None else None
    if m.group(1) == "cpu":
        if index not in (None, 0):
            raise InvalidArgumentError(f"unsupported device {value!r}: the CPU has no index")
        return CPU
    return Placement("cuda", index)


def require_torch_device(placement: Placement) -> Any:
    """The ``torch.device`` for ``placement``, refusing a CUDA device torch cannot use."""
    torch = import_torch()
    if placement.is_cuda:
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device={str(placement)!r} was requested but CUDA is not available "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
                "pass device='cpu' to load on the CPU"
            )
        count = torch.cuda.device_count()
        if placement.cuda_index >= count:
            raise DeviceUnavailableError(
                f"device={str(placement)!r} was requested but only {count} CUDA "
                f"device(s) are visible"
            )
    return placement.torch_device()


def refuse_non_cpu(placement: Placement, framework: str) -> None:
    """Frameworks whose objects live in host memory take only the CPU."""
    if placement.is_cuda:
        raise LoaderError(
            f"framework {framework!r} returns host memory and cannot load onto "
            f"{str(placement)!r}; use framework='torch' for tensors on the GPU"
        )


class CudaCopyOps:
    """The CUDA operations the copy ring uses; tests pass a fake with the same methods.

    Split out so that the ring's use of them (pinned slots, one side stream
    ordered after the destination's allocation, an event per copy, waiting
    on a slot's event before refilling it) is tested on machines without a
    GPU, with copies that complete late as a real DMA does
    (tests/loaders/test_placement.py).
    """

    def __init__(self, device: Any) -> None:
        torch = import_torch()
        self._torch = torch
        self._stream = torch.cuda.Stream(device=device)
        # dest was allocated on the current stream; copies must not overtake it
        self._stream.wait_stream(torch.cuda.current_stream(device))

    def pinned(self, size: int) -> Any:
        """A page-locked host buffer, so a copy from it is a real asynchronous DMA."""
        return self._torch.empty(size, dtype=self._torch.uint8, pin_memory=True)

    def copy_async(self, dst: Any, src: Any) -> Any:
        """Queue ``dst.copy_(src)`` on the side stream; returns an event recorded after it."""
        torch = self._torch
        with torch.cuda.stream(self._stream):
            dst.copy_(src, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._stream)
        return event

    def wait(self, event: Any) -> None:
        event.synchronize()

    def synchronize(self) -> None:
        self._stream.synchronize()


class TorchDeviceCopier:
    """The :class:`~modelseal.sealed.reader.DeviceCopier` for a torch tensor.

    On CUDA (``ops``: :class:`CudaCopyOps`): pinned host slots, one side
    stream, and an event per slot that :meth:`acquire` waits for before the
    slot is written again. On any other device the same ring runs with plain
    host slots and blocking copies, which is how the suite exercises the
    loader without a GPU; the CUDA branch is tested with a fake ``ops``.
    """

    def __init__(self, dest: Any, slot_size: int, slots: int, *, ops: Any = None) -> None:
        torch = import_torch()
        self._dest = dest
        if ops is None and dest.device.type == "cuda":
            ops = CudaCopyOps(dest.device)
        self._ops = ops
        self._host = [
            ops.pinned(slot_size) if ops is not None else torch.empty(slot_size, dtype=torch.uint8)
            for _ in range(slots)
        ]
        self._views = [memoryview(h.numpy()).cast("B") for h in self._host]
        self._events: list[Any] = [None] * slots

    def acquire(self, slot: int) -> memoryview:
        event = self._events[slot]
        if event is not None:
            self._ops.wait(event)
            self._events[slot] = None
        return self._views[slot]

    def submit(self, slot: int, src_offset: int, dst_offset: int, size: int) -> None:
        src = self._host[slot][src_offset : src_offset + size]
        dst = self._dest[dst_offset : dst_offset + size]
        if self._ops is None:
            dst.copy_(src)
            return
        self._events[slot] = self._ops.copy_async(dst, src)

    def finish(self) -> None:
        if self._ops is not None:
            self._ops.synchronize()


def safetensors_to_device(reader: SealedReader, entry: Entry, device: Any) -> dict[str, Any]:
    """All tensors of one sealed safetensors entry, on ``device`` (a ``torch.device``).

    The (small) safetensors header is decrypted and parsed on the host; the
    data section goes through the copy ring into one device byte buffer and
    each tensor is a view into it. Any failure drops the buffer: no tensor
    is returned unless every chunk of the entry authenticated.
    """
    torch = import_torch()
    index = parse_header(lambda off, size: reader.read_range(entry.offset + off, size), entry.size)
    data_len = entry.size - index.data_start
    dest = torch.empty(data_len, dtype=torch.uint8, device=device)
    copier = TorchDeviceCopier(dest, reader.header.chunk_size, reader.ring_slots())
    reader.copy_to_device(entry.offset + index.data_start, data_len, copier)
    return {
        name: to_device_tensor(dest, info, index.data_start) for name, info in index.tensors.items()
    }


__all__ = [
    "CPU",
    "CudaCopyOps",
    "Placement",
    "TorchDeviceCopier",
    "refuse_non_cpu",
    "require_torch_device",
    "resolve",
    "safetensors_to_device",
]
