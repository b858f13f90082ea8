"""What the image cache saves, and how fast a model container starts and stops (issue #14).

    .venv/bin/python bench/image_build.py [--cold-base]

Everything runs in a scratch podman store (``--root``/``--runroot`` under a
temporary folder), so the machine's images neither help nor get touched:

- loading the cached base image (``podman load`` of the saved tar) against
  building it with debootstrap (``--cold-base`` measures that here; without
  it the cold figure is the one given, measured once: it takes 1-2 minutes);
- building a model image with no layer cache against building a second
  model for the same runtimes (every layer but the model's cached);
- a container from ``podman run`` to ready (``/v2/health/ready`` answers),
  and ``podman stop`` (SIGTERM through tini) against the stop timeout.

Prints a table and writes bench/out/image_build.json. No target: the point
is the ratios (cache vs. cold), measured on a shared, loaded machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
OUT = ROOT / "bench" / "out"
#: bench on 2026-12-04, the first build on this machine (debootstrap + import + save).
COLD_BASE_S_MEASURED = 107.1


def _timed(fn: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()  # type: ignore[operator]
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cold-base", action="store_true", help="also debootstrap the base (~2 min)")
    args = ap.parse_args()

    from tests.containers.conftest import _sealed_classifier

    from modelseal.image.base import default_cache_dir, ensure_base_image
    from modelseal.image.build import ImageRecipe, build_image
    from modelseal.image.podman import Podman

    cache = default_cache_dir()
    work = Path(tempfile.mkdtemp(prefix="modelseal-bench-image-"))
    results: dict[str, float] = {}
    try:
        podman = Podman(state_dir=work / "state", storage_root=work / "store")
        if args.cold_base:
            results["base_cold_s"], _ = _timed(
                lambda: ensure_base_image(podman, cache_dir=work / "cache")
            )
            podman = Podman(state_dir=work / "state", storage_root=work / "store2")
        else:
            results["base_cold_s"] = COLD_BASE_S_MEASURED
            ensure_base_image(Podman(), cache_dir=cache)  # make sure the cache file exists
        base_cache = cache if not args.cold_base else work / "cache"
        results["base_load_s"], base = _timed(
            lambda: ensure_base_image(podman, cache_dir=base_cache)
        )
        assert base.source == "cache", base  # type: ignore[attr-defined]

        models = []
        for i in range(2):
            folder = work / f"model{i}"
            folder.mkdir()
            model, *_ = _sealed_classifier(folder)
            models.append(model)
        recipes = [
            ImageRecipe(tag=f"localhost/bench/clf:{i}", model_file=m, runtimes=("onnx",))
            for i, m in enumerate(models)
        ]
        results["image_cold_s"], built = _timed(
            lambda: build_image(recipes[0], podman=podman, cache_dir=cache, base=base)  # type: ignore[arg-type]
        )
        results["image_warm_s"], _ = _timed(
            lambda: build_image(recipes[1], podman=podman, cache_dir=cache, base=base)  # type: ignore[arg-type]
        )
        results["image_mb"] = built.size_bytes / 1e6  # type: ignore[attr-defined]

        # Start to ready with a plain (no license: --entrypoint) HTTP server would not be
        # the model; the launcher's refusal is the fastest full path through the image.
        start = time.perf_counter()
        proc = podman.run(["run", "--rm", "--pull=never", recipes[0].tag], check=False)
        results["refusal_s"] = time.perf_counter() - start
        assert proc.returncode == 3, proc.stderr

        cid = podman.run(
            [
                "run",
                "-d",
                "--pull=never",
                "-p",
                "127.0.0.1::8000",
                "--entrypoint",
                '["/usr/bin/tini", "-g", "--", "/opt/modelseal/bin/python", "-m", '
                '"http.server", "8000"]',
                recipes[0].tag,
            ]
        ).stdout.strip()
        port = podman.run(["port", cid, "8000"]).stdout.strip().rsplit(":", 1)[1]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        start = time.perf_counter()
        podman.run(["stop", "-t", "10", cid], timeout=60)
        results["stop_s"] = time.perf_counter() - start
        results["stop_timeout_s"] = 10.0
        podman.run(["rm", "-f", cid], check=False)
    finally:
        # Only this scratch store's images (never "system reset": that also
        # clears the machine's network configuration).
        for store in ("store", "store2"):
            if (work / store).exists():
                Podman(state_dir=work / "state", storage_root=work / store).run(
                    ["rmi", "-a", "-f"], check=False, timeout=120
                )
        shutil.rmtree(work, ignore_errors=True)

    rows = [
        (
            "base image: load from cache / debootstrap",
            results["base_load_s"],
            results["base_cold_s"],
        ),
        (
            "model image: 2nd model (layers cached) / cold",
            results["image_warm_s"],
            results["image_cold_s"],
        ),
        (
            "podman stop (SIGTERM via tini) / stop timeout",
            results["stop_s"],
            results["stop_timeout_s"],
        ),
    ]
    print(f"{'':50} {'s':>8} {'vs s':>8} {'ratio':>7}")
    for name, a, b in rows:
        print(f"{name:50} {a:8.1f} {b:8.1f} {a / b:7.3f}")
    print(
        f"model image size: {results['image_mb']:.0f} MB; refusal without a license: "
        f"{results['refusal_s']:.1f} s"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "image_build.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
