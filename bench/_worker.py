"""One measured load in a fresh process (called by load_overhead.py).

Prints one JSON line: load wall time and the process's CPU time (user +
system, every thread; imports excluded), RSS before the load and peak RSS
after it, from the kernel's own accounting (VmRSS, VmHWM). CPU time is the
figure a shared machine disturbs least: a loader with more threads than
cores takes a larger share of a busy machine and wins on wall time for it.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def status(field: str) -> int:
    """VmRSS / VmHWM of this process. Not ru_maxrss: Linux carries the parent's
    peak across fork+exec into RUSAGE_SELF, while VmHWM starts fresh at exec."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def cpu_seconds() -> float:
    """User + system time of every thread of this process so far (nanosecond clock;
    ``os.times`` counts 10 ms ticks)."""
    return time.process_time()


def touch(obj: Any) -> int:
    """Read one byte of every 4 KiB page of every tensor.

    safetensors' load_file maps the file lazily: without this, a "plain load"
    would be timed without reading the weights at all. Timed for every variant.
    """
    import torch

    total = 0
    values = obj.values() if isinstance(obj, dict) else [obj]
    for v in values:
        if isinstance(v, torch.Tensor) and v.numel():
            flat = v.detach().reshape(-1).view(torch.uint8)
            total += int(flat[::4096].sum()) + int(flat[-1])
    return total


#: A one-row read takes about a millisecond, where one scheduling hiccup of
#: a shared machine is several: each slice variant reads from this many
#: fresh handles in its process and reports the median.
SLICE_REPEATS = 7


def slice_read(variant: str, path: str, key: str) -> tuple[Any, float]:
    """Row 0 of one tensor, from a fresh handle each time; (row, median seconds)."""
    import statistics

    import modelseal

    tensor = "embed.weight" if variant.endswith("_embed") else "big.0"
    walls = []
    for _ in range(SLICE_REPEATS):
        if variant.startswith("sealed"):
            with modelseal.open(path, key=key) as m:
                view = m.safetensors()
                t0 = time.perf_counter()  # the slice read itself, after open
                result = view.get_slice(tensor, framework="torch")[0:1]
                touch(result)
                walls.append(time.perf_counter() - t0)
        else:
            from bench._peer_cryptotensors import load_slice

            result, t0 = load_slice(path, key, tensor)
            touch(result)
            walls.append(time.perf_counter() - t0)
    return result, statistics.median(walls)


def main() -> None:
    variant, path = sys.argv[1], sys.argv[2]
    extra = sys.argv[3] if len(sys.argv) > 3 else ""
    import numpy as np  # noqa: F401 - imports are not part of the measurement
    import torch

    import modelseal

    # what modelseal.load imports on first use (the loaders, the crypto
    # layer) is import time too, which no variant is timed with
    import modelseal.crypto
    import modelseal.loaders.dispatch

    if variant.startswith("cryptotensors"):
        import cryptotensors  # noqa: F401
    if variant.startswith("tensorizer"):
        import tensorizer  # noqa: F401
    from safetensors.torch import load_file

    torch.set_num_threads(2)
    base = status("VmRSS")
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    if variant == "plain_safetensors_mmap":
        result: Any = load_file(path)
    elif variant == "plain_safetensors_read":
        from safetensors.torch import load

        with open(path, "rb") as fh:
            result = load(fh.read())
    elif variant == "sealed_safetensors":
        result = modelseal.load(path, key=extra, framework="torch")
    elif variant == "plain_torch":
        result = torch.load(path, weights_only=True)
    elif variant == "sealed_torch":
        result = modelseal.load(path, key=extra, framework="torch")
    elif "slice" in variant:
        result, wall = slice_read(variant, path, extra)
    elif variant == "cryptotensors_safetensors":
        from bench._peer_cryptotensors import load_all

        result = load_all(path, extra)
    elif variant.startswith("tensorizer"):
        from bench._peer_tensorizer import load as tensorizer_load

        readers = 2 if variant == "tensorizer_plain_2readers" else None
        result = tensorizer_load(path, extra, num_readers=readers)
    else:
        raise SystemExit(f"unknown variant {variant}")
    checksum = touch(result)
    if "slice" not in variant:
        wall = time.perf_counter() - t0
    # a slice variant's process does 7 opens and reads: its CPU time is not one read's
    cpu = None if "slice" in variant else cpu_seconds() - c0
    peak = status("VmHWM")
    print(
        json.dumps(
            {
                "variant": variant,
                "wall": wall,
                "cpu": cpu,
                "base_rss": base,
                "peak_rss": peak,
                "checksum": checksum,
                "tensors": len(result) if isinstance(result, dict) else 1,
            }
        )
    )


if __name__ == "__main__":
    main()
