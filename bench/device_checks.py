"""Cost of the issue #8 checks (items 3, 14, 15), each against the unchecked path, in one run.

    .venv/bin/python bench/device_checks.py [--rounds 7]

- fingerprinting this machine (``LinuxSource`` on ``/``) with the host-view
  checks (``fstatfs`` + mount id per file, user namespace) against the same
  source with ``check_view=False``;
- one SM2 signature verification with GmSSL's stderr captured against the
  bare ``gmssl_pyx.sm2_verify`` call;
- creating an ONNX Runtime session for a 64 MiB graph whose weights are
  external data held in memory, with the external-reference scan against
  ONNX Runtime alone.

Prints a table and writes bench/out/device_checks.json. No target: the
point is that the checks are small next to the work they guard.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out"


def _paired_ms(
    checked: Callable[[], Any], plain: Callable[[], Any], rounds: int, inner: int
) -> tuple[float, float]:
    """Median ms per call of each, rounds interleaved so load from other users hits both."""
    checked()
    plain()  # warm
    samples: dict[str, list[float]] = {"checked": [], "plain": []}
    for _ in range(rounds):
        for name, fn in (("checked", checked), ("plain", plain)):
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - start) * 1000 / inner)
    return statistics.median(samples["checked"]), statistics.median(samples["plain"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()

    import gmssl_pyx
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from modelseal.crypto import sm2
    from modelseal.device import LinuxSource
    from modelseal.loaders.onnx import create_session

    rows: list[dict[str, Any]] = []

    def row(name: str, timings: tuple[float, float]) -> None:
        checked, plain = timings
        rows.append(
            {"what": name, "checked_ms": checked, "plain_ms": plain, "ratio": checked / plain}
        )

    def fingerprint(check: bool) -> Callable[[], Any]:
        def run() -> Any:
            source = LinuxSource(check_view=check, gpus=list)
            return source.components(), source.environment()

        return run

    row(
        "fingerprint this machine (components + environment)",
        _paired_ms(fingerprint(True), fingerprint(False), args.rounds, 5),
    )

    private, public = sm2.generate()
    sig = sm2.sign(private, public, b"bench")
    row(
        "SM2 verify (valid signature)",
        _paired_ms(
            lambda: sm2.verify(public, b"bench", sig),
            lambda: gmssl_pyx.sm2_verify(public, b"bench", sig, signer_id=sm2.DEFAULT_USER_ID),
            args.rounds,
            50,
        ),
    )

    weights = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)
    tensor = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=list(weights.shape))
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(weights.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])],
        initializer=[tensor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data = model.SerializeToString()
    buffer = weights.reshape(-1).view(np.uint8)

    def plain_session() -> Any:
        options = ort.SessionOptions()
        options.add_external_initializers_from_files_in_memory(
            ["w.bin"], [buffer], [int(buffer.nbytes)]
        )
        return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])

    row(
        "ONNX session, 64 MiB external data in memory",
        _paired_ms(lambda: create_session(data, {"w.bin": buffer}), plain_session, args.rounds, 1),
    )

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "device_checks.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"{'what':55} {'checked ms':>11} {'plain ms':>9} {'ratio':>6}")
    for r in rows:
        print(f"{r['what']:55} {r['checked_ms']:11.3f} {r['plain_ms']:9.3f} {r['ratio']:6.2f}")


if __name__ == "__main__":
    main()
