"""GPU UUIDs: NVML when ``pynvml`` is importable, else ``nvidia-smi -L``.

Only whole-GPU UUIDs (``GPU-...``) count. MIG instance UUIDs (``MIG-...``)
change whenever an operator repartitions the GPU, which would unbind a
license for an ordinary administrative action.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from typing import Any, Final

from modelseal.device._io import CommandRunner, run_command

#: nvidia-smi answers in well under a second when the driver is healthy; a hung
#: driver must not hang fingerprinting.
NVIDIA_SMI_TIMEOUT: Final = 3.0

_SMI_UUID: Final = re.compile(r"\(UUID:\s*(GPU-[0-9A-Fa-f-]{8,64})\)")
_GPU_UUID: Final = re.compile(r"^gpu-[0-9a-f-]{8,64}$")  # matched after lowercasing


def parse_nvidia_smi_list(output: str) -> list[str]:
    """The GPU UUIDs in ``nvidia-smi -L`` output, lowercased, MIG lines ignored."""
    return sorted({m.group(1).lower() for m in _SMI_UUID.finditer(output)})


def _nvml_uuids() -> list[str] | None:
    """UUIDs via NVML, or None when pynvml or the driver is unavailable."""
    try:
        nvml: Any = importlib.import_module("pynvml")
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except Exception:  # pynvml raises its own NVMLError family; any means "no NVML"
        return None
    try:
        found: list[str] = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            raw = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(index))
            text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
            found.append(text.strip().lower())
        return sorted(u for u in found if _GPU_UUID.match(u))
    except Exception:
        return None
    finally:
        # Shutting down a half-initialised NVML may fail; there is nothing to do about it.
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def gpu_uuids(run: CommandRunner = run_command) -> list[str]:
    """Whole-GPU UUIDs of this machine; empty when there are none or no tool answers."""
    found = _nvml_uuids()
    if found is not None:
        return found
    output = run(["nvidia-smi", "-L"], NVIDIA_SMI_TIMEOUT)
    return parse_nvidia_smi_list(output) if output else []
