"""``acheck(count=False)`` uses no licensed call on the slow path either.

Rule: ``acheck`` is ``check`` for async code; when the fast path cannot
answer (a re-verification is due), it runs ``check`` in a worker thread with
the caller's ``count``, so a metadata or readiness request never spends a
call. Found by mutation testing (tests/MUTATION.md, guard/core.py ``acheck``:
``count`` dropped from the worker thread's call survived, because the
existing test's Guard never needed a re-verification).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from modelseal.crypto import ContentKey, PrivateKey
from tests.guard_core.test_guard import FakeClock, _guard, _license
from tests.license.conftest import NOW


def test_acheck_without_counting_uses_no_call_when_reverifying(
    vendor: PrivateKey, model: tuple[Path, ContentKey], tmp_path: Path
) -> None:
    """Rule: the slow path passes ``count=False`` through (every call re-verifies here)."""
    _, cek = model
    guard = _guard(
        vendor,
        _license(vendor, cek, max_calls=5),
        tmp_path,
        FakeClock(NOW),
        recheck_every=timedelta(0),
        reserve_calls=1,
    )

    async def go() -> None:
        for _ in range(8):
            await guard.acheck(count=False)
        await guard.acheck("ocr", count=False)

    asyncio.run(go())
    state = guard.state()
    assert state is not None and state.calls_reserved == 0
    assert guard.usage() == 0
    asyncio.run(guard.acheck())  # and counting still counts on the same path
    assert guard.usage() == 1
