"""Prometheus plumbing shared by the servers (``serve``, ``gateway``); imported lazily.

With several worker processes each keeps its own counters, so a scrape
that lands on one worker would see a fraction: when ``--workers`` > 1 the
parent points ``PROMETHEUS_MULTIPROC_DIR`` at a private directory before
any worker starts, and a scrape aggregates every worker's files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_workers(workers: int) -> str | None:
    """Call in the parent before workers start; returns the directory to remove at exit."""
    if workers <= 1 or os.environ.get(ENV):
        return None
    path = tempfile.mkdtemp(prefix="modelseal-metrics-")
    os.environ[ENV] = path
    return path


def cleanup(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


def new_registry() -> Any:
    """A private registry, so two apps in one process (tests) do not collide."""
    from prometheus_client import CollectorRegistry

    return CollectorRegistry(auto_describe=True)


def render(registry: Any) -> tuple[bytes, str]:
    """The exposition text: this process's registry, or all workers' files."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged), CONTENT_TYPE_LATEST
    return generate_latest(registry), CONTENT_TYPE_LATEST
