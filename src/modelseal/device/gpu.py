"""GPU UUIDs from ``nvidia-smi -L``, run by absolute path from a system directory.

Only whole-GPU UUIDs (``GPU-...``) count. MIG instance UUIDs (``MIG-...``)
change whenever an operator repartitions the GPU, which would unbind a
license for an ordinary administrative action.

``pynvml`` is deliberately not used: it is imported from ``sys.path``,
which the user controls (``PYTHONPATH``, the working directory, user
site-packages), so a fake module could report any GPU (issue #8, item 13).
``nvidia-smi`` is found only in root-owned system directories and runs with
a minimal environment (``modelseal.device._io.run_command``).
"""

from __future__ import annotations

import re
from typing import Final

from modelseal.device._io import CommandRunner, run_command

#: nvidia-smi answers in well under a second when the driver is healthy; a hung
#: driver must not hang fingerprinting.
NVIDIA_SMI_TIMEOUT: Final = 3.0

_SMI_UUID: Final = re.compile(r"\(UUID:\s*(GPU-[0-9A-Fa-f-]{8,64})\)")


def parse_nvidia_smi_list(output: str) -> list[str]:
    """The GPU UUIDs in ``nvidia-smi -L`` output, lowercased, MIG lines ignored."""
    return sorted({m.group(1).lower() for m in _SMI_UUID.finditer(output)})


def gpu_uuids(run: CommandRunner = run_command) -> list[str]:
    """Whole-GPU UUIDs of this machine; empty when there are none or no trusted tool answers."""
    output = run(["nvidia-smi", "-L"], NVIDIA_SMI_TIMEOUT)
    return parse_nvidia_smi_list(output) if output else []
