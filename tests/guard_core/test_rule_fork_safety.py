"""Rule: a forked child (a pre-fork server's worker) starts with fresh locks and
no reserved calls, and owns what it reserves itself (docs/guard.md, quotas):

* a lock another thread of the parent held at ``fork()`` does not deadlock
  the child (the state store's and the audit log's thread locks are renewed);
* the child's ``close()`` (its ``atexit``) gives back the calls *it* reserved
  and did not use, and nothing of the parent's block.

Found by mutation testing (tests/MUTATION.md, guard/core.py): the fork hook
``Guard._after_fork_in_child`` could skip renewing the store's or the audit
log's lock, or forget the child's pid, without a failing test. mutmut itself
reports these mutants as "no tests": it cannot see what a forked child runs.
"""

from __future__ import annotations

import signal
from pathlib import Path

from modelseal.crypto import ContentKey, PrivateKey
from tests.guard_core.test_guard import FakeClock, _guard, _license
from tests.guard_core.test_red_team import _in_fork
from tests.license.conftest import NOW

Model = tuple[Path, ContentKey]


def test_a_child_gives_back_what_it_reserved_itself(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    guard = _guard(
        vendor, _license(vendor, cek, max_calls=100), tmp_path, FakeClock(NOW), reserve_calls=10
    )
    guard.check()  # the parent: 10 reserved, 9 held

    def one_call() -> int:
        guard.check()  # the child reserves its own block of 10
        guard.close()  # and gives back the 9 it did not use
        return 1

    assert _in_fork(one_call) == 1
    assert guard.state().calls_reserved == 11  # type: ignore[union-attr]
    assert guard.usage() == 2  # one call each


def test_locks_held_at_fork_do_not_deadlock_the_child(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    guard = _guard(
        vendor, _license(vendor, cek, max_calls=100), tmp_path, FakeClock(NOW), reserve_calls=1
    )
    guard.check()
    # what another thread of the parent may hold at the moment of fork()
    store_lock = guard._store._thread_lock  # type: ignore[union-attr]
    audit_lock = guard._audit._thread_lock
    store_lock.acquire()
    audit_lock.acquire()
    try:

        def reserve_in_child() -> int:
            signal.alarm(20)  # a deadlocked child dies instead of hanging the suite
            guard.check()  # reserves: the state store's and the audit log's locks
            signal.alarm(0)
            return 1

        assert _in_fork(reserve_in_child) == 1
    finally:
        store_lock.release()
        audit_lock.release()
    assert guard.usage() == 2
