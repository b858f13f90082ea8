"""Rule: at most N argon2 hashes run at once in a control-plane process.

Each argon2id hash (argon2-cffi's defaults) holds 64 MiB while it runs; the
server answers from a pool of 40 threads, so a burst of logins would take
2.5 GiB. Logins over the limit wait for a slot: slower, never refused, and
the dummy-hash check of an unknown user waits the same (no timing oracle).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelseal.controlplane.services import people


class _SlowHasher:
    """Stands in for argon2's PasswordHasher and records how many run at once."""

    running = 0
    peak = 0
    lock = threading.Lock()

    def _enter(self) -> None:
        with self.lock:
            type(self).running += 1
            type(self).peak = max(type(self).peak, type(self).running)
        time.sleep(0.05)
        with self.lock:
            type(self).running -= 1

    def hash(self, password: str) -> str:
        self._enter()
        return "$fake$" + password

    def verify(self, stored: str, password: str) -> bool:
        self._enter()
        return stored == "$fake$" + password


@pytest.fixture
def slow_hasher(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_SlowHasher]]:
    _SlowHasher.running = _SlowHasher.peak = 0
    monkeypatch.setattr(people, "_hasher", _SlowHasher)
    monkeypatch.setattr(people, "_DUMMY_HASH", None)
    before = people.ARGON2_SLOTS
    yield _SlowHasher
    people.ARGON2_SLOTS = before


def _burst(work: Any, n: int = 8) -> list[Any]:
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_hashes_and_checks_never_exceed_the_limit(
    slow_hasher: type[_SlowHasher], limit: int
) -> None:
    people.limit_argon2(limit)
    stored = people.hash_password("correct horse battery")
    slow_hasher.peak = 0
    results = _burst(
        lambda i: people.check_password(stored if i % 3 else None, "correct horse battery")
    )
    assert slow_hasher.peak == limit  # 8 callers saturate it, none gets past it
    assert results == [False, True, True, False, True, True, False, True]


def test_the_default_follows_the_usable_cpus() -> None:
    import os

    assert people.default_argon2_concurrency() == max(2, min(8, len(os.sched_getaffinity(0))))


def test_the_setting_reaches_the_running_app(
    tmp_path: Path, slow_hasher: type[_SlowHasher], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelseal.controlplane.app import create_app
    from modelseal.controlplane.settings import Settings

    monkeypatch.setenv("MODELSEAL_ARGON2_CONCURRENCY", "3")
    settings = Settings(data_dir=tmp_path / "cp", public_url="http://127.0.0.1:9")
    assert settings.argon2_concurrency == 3
    create_app(settings)
    _burst(lambda i: people.hash_password(f"password number {i}"))
    assert slow_hasher.peak == 3
