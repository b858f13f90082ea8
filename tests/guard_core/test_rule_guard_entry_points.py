"""Rules for the Guard's smaller entry points (docs/guard.md, docs/guard-audit-unlock.md):

* ``acheck`` runs the per-call fast path on the event loop and everything
  slow (the periodic re-verification, reserving a block of calls, auditing
  a refused feature) in a worker thread, never on the loop; and the fast
  path is taken exactly when none of those is due.
* The default state directory is ``$MODELSEAL_STATE_DIR``, else
  ``$XDG_STATE_HOME/modelseal``, else ``~/.local/state/modelseal`` (the XDG
  base directory spec's default).
* ``Guard.from_env`` needs both ``MODELSEAL_LICENSE`` and ``MODELSEAL_TRUST``;
  either alone is ``not_configured``.
* ``Guard.load`` passes the framework and the loader options through.
* ``Guard.state()`` is the decrypted state after a verification, None before.

Found by mutation testing (tests/MUTATION.md, guard/core.py): each of these
could be changed without a failing test (``acheck`` sending everything to a
thread, or nothing; ``default_state_dir`` ignoring ``XDG_STATE_HOME``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from modelseal.crypto import ContentKey, PrivateKey
from modelseal.errors import InvalidArgumentError
from modelseal.guard import Guard, NotLicensedError
from modelseal.guard.core import default_state_dir
from tests.guard_core.test_guard import FakeClock, _guard, _license
from tests.license.conftest import NOW

Model = tuple[Path, ContentKey]


class Threads:
    """Which thread ran ``check`` and each slow step of a Guard."""

    SLOW = ("_recheck", "_reserve", "_log_feature_refusal")

    def __init__(self, guard: Guard, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: dict[str, list[int]] = {}
        for name in ("check", *self.SLOW):
            monkeypatch.setattr(guard, name, self._spy(name, getattr(guard, name)))

    def _spy(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def spy(*args: Any, **kwargs: Any) -> Any:
            self.seen.setdefault(name, []).append(threading.get_ident())
            return real(*args, **kwargs)

        return spy

    def take(self) -> dict[str, list[int]]:
        seen, self.seen = self.seen, {}
        return seen


def _acheck(guard: Guard, feature: Any = None) -> tuple[int, BaseException | None]:
    """Run one ``acheck`` on a fresh event loop; returns the loop's thread and any error."""

    async def run() -> tuple[int, BaseException | None]:
        try:
            await guard.acheck(feature)
        except NotLicensedError as exc:
            return threading.get_ident(), exc
        return threading.get_ident(), None

    return asyncio.run(run())


@pytest.mark.parametrize("feature", [None, "ocr", ["ocr"], ("ocr",)])
def test_the_fast_path_stays_on_the_event_loop(
    vendor: PrivateKey, model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, feature: Any
) -> None:
    _, cek = model
    guard = _guard(vendor, _license(vendor, cek), tmp_path, FakeClock(NOW))
    guard.check()  # verified; the next re-verification is 30 s away
    threads = Threads(guard, monkeypatch)
    loop, error = _acheck(guard, feature)
    assert error is None
    assert threads.take() == {"check": [loop]}  # no hop to a thread, nothing slow


def test_a_due_reverification_runs_off_the_loop(
    vendor: PrivateKey, model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cek = model
    guard = _guard(
        vendor, _license(vendor, cek), tmp_path, FakeClock(NOW), recheck_every=timedelta(0)
    )
    threads = Threads(guard, monkeypatch)
    for feature in (None, "ocr"):
        loop, error = _acheck(guard, feature)
        assert error is None
        seen = threads.take()
        assert seen["_recheck"] and loop not in seen["_recheck"] + seen["check"]


@pytest.mark.parametrize("feature", ["hd", ["ocr", "hd"]])
def test_a_refused_feature_is_audited_off_the_loop(
    vendor: PrivateKey, model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, feature: Any
) -> None:
    _, cek = model
    guard = _guard(vendor, _license(vendor, cek), tmp_path, FakeClock(NOW))
    guard.check()
    threads = Threads(guard, monkeypatch)
    loop, error = _acheck(guard, feature)
    assert isinstance(error, NotLicensedError) and error.reason == "feature_missing"
    seen = threads.take()
    assert seen["_log_feature_refusal"] and loop not in seen["_log_feature_refusal"]


def test_reserving_calls_runs_off_the_loop_and_spending_them_on_it(
    vendor: PrivateKey, model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cek = model
    guard = _guard(
        vendor, _license(vendor, cek, max_calls=10), tmp_path, FakeClock(NOW), reserve_calls=2
    )
    threads = Threads(guard, monkeypatch)
    # block of 2: reserve (thread), spend the second (loop), reserve again (thread)
    for reserves in (True, False, True):
        loop, error = _acheck(guard)
        assert error is None
        seen = threads.take()
        if reserves:
            assert seen["_reserve"] and loop not in seen["_reserve"] + seen["check"]
        else:
            assert seen == {"check": [loop]}
    assert guard.usage() == 3 and guard.state().calls_reserved == 4  # type: ignore[union-attr]


def test_a_refusing_guard_refuses_acheck(vendor: PrivateKey, model: Model, tmp_path: Path) -> None:
    _, cek = model
    clock = FakeClock(NOW)
    guard = _guard(vendor, _license(vendor, cek), tmp_path, clock, recheck_every=timedelta(0))
    clock.now = NOW + timedelta(days=31)
    for _ in range(2):  # the first re-verifies and refuses; the second is the sticky refusal
        _, error = _acheck(guard)
        assert isinstance(error, NotLicensedError) and error.reason == "expired"


# --- the default state directory ------------------------------------------------


def test_the_state_directory_follows_the_xdg_spec(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELSEAL_STATE_DIR", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "modelseal"
    monkeypatch.setenv("XDG_STATE_HOME", "")  # empty is unset (XDG base directory spec)
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "modelseal"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "modelseal"
    monkeypatch.setenv("MODELSEAL_STATE_DIR", str(tmp_path / "mine"))
    assert default_state_dir() == tmp_path / "mine"


def test_a_guard_without_state_dir_uses_the_default(
    vendor: PrivateKey, model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cek = model
    monkeypatch.delenv("MODELSEAL_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    guard = _guard(vendor, _license(vendor, cek), tmp_path, FakeClock(NOW), state_dir=None)
    assert guard.audit_path.parent == tmp_path / "xdg" / "modelseal"


# --- from_env, load, state ------------------------------------------------------


@pytest.mark.parametrize("only", ["MODELSEAL_LICENSE", "MODELSEAL_TRUST"])
def test_from_env_needs_both_license_and_trust(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, only: str
) -> None:
    monkeypatch.delenv("MODELSEAL_LICENSE", raising=False)
    monkeypatch.delenv("MODELSEAL_TRUST", raising=False)
    monkeypatch.setenv(only, str(tmp_path / "somewhere"))
    with pytest.raises(NotLicensedError) as info:
        Guard.from_env(audience="acme/ocr")
    assert info.value.reason == "not_configured"


def test_load_passes_the_framework_and_options_through(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    path, cek = model
    guard = _guard(vendor, _license(vendor, cek), tmp_path, FakeClock(NOW))
    # the whole safetensors file as bytes, where the default (numpy) gives a dict of arrays
    raw = guard.load(path, framework="bytes")
    assert isinstance(raw, bytes) and len(raw) > 12 * 4
    assert isinstance(guard.load(path), dict)
    with pytest.raises(InvalidArgumentError, match="paddle"):
        guard.load(path, framework="numpy", configure=print)


def test_state_is_the_decrypted_state_after_a_verification(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    token = _license(vendor, cek, max_calls=10)
    unverified = _guard(vendor, token, tmp_path, FakeClock(NOW), verify=False)
    assert unverified.state() is None
    guard = _guard(vendor, token, tmp_path, FakeClock(NOW), reserve_calls=3)
    guard.check()
    state = guard.state()
    assert state is not None and state.calls_reserved == 3 and guard.usage() == 1


def test_acheck_without_counting_uses_no_call(
    vendor: PrivateKey, model: tuple[Path, ContentKey], tmp_path: Path
) -> None:
    """Rule: ``acheck(count=False)`` checks without using a licensed call, on the
    fast path and the slow one, as ``check(count=False)`` does (a service's
    metadata and readiness requests). Found by mutation testing (guard/core.py
    ``acheck``: ``count`` could be dropped)."""
    _, cek = model
    guard = _guard(vendor, _license(vendor, cek, max_calls=5), tmp_path, FakeClock(NOW))

    async def go() -> None:
        for _ in range(10):
            await guard.acheck(count=False)
        await guard.acheck("ocr", count=False)

    asyncio.run(go())
    assert guard.usage() == 0
    guard.check()
    asyncio.run(go())  # now with a reserved block: the fast path
    assert guard.usage() == 1
