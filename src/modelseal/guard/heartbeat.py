"""The Guard's heartbeat client: HTTP to the license server, on a background thread.

Off the request path by construction: ``check()`` never waits for the
network. The thread beats once at start (so a suspension or revocation
reaches a freshly started service at once), then every ``interval`` with
±10 % jitter (a fleet restarted together does not beat in lockstep), and
backs off exponentially from 5 s up to the interval while the server is
unreachable. Grace is counted from the last *verified* reply (docs/license.md),
so an unreachable server, a forged reply and no reply are all the same thing:
time passes.

The client side needs only the standard library (``modelseal._http``), no
server extra, and never imports the server.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from modelseal._http import ServerError, call
from modelseal.errors import ModelsealError
from modelseal.license.heartbeat import HeartbeatRequest, authorization_header

if TYPE_CHECKING:
    from modelseal.guard.core import Guard, HeartbeatReply, HeartbeatReport

MIN_BACKOFF: Final = 5.0
JITTER: Final = 0.1
#: Seconds to the next beat while audit records wait to ship (a full batch
#: went out): a device back from offline catches up in minutes, not intervals,
#: at a pace a fleet coming back together cannot turn into a flood.
BACKLOG_DELAY: Final = 5.0


def _backlog(guard: Guard) -> bool:
    shipper = getattr(guard, "_shipper", None)
    return bool(getattr(shipper, "backlog", False))


def request_body(report: HeartbeatReport) -> bytes:
    """The heartbeat request's body for a Guard's report (a report with a credential):
    one place, so every transport (HTTP here, tests' in-process ones) sends the same bytes."""
    if report.device_id is None:
        raise ServerError("this license has no device credential to authenticate with")
    head = report.audit_head
    return HeartbeatRequest(
        license_id=report.license_id,
        device_id=report.device_id,
        nonce=report.nonce,
        time=int(report.time),
        calls_used=max(0, report.calls_reserved),
        audit_head=(int(str(head[0])), str(head[1])) if head else None,
        lease=report.lease,
        audit_records=report.audit_records,
    ).to_body()


class HttpHeartbeatClient:
    """POSTs the report, MAC'd with the device credential; returns the signed reply unverified.

    Verification is the Guard's job (its trust store, the nonce it chose):
    this client cannot make a reply count, whatever it returns.
    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.timeout = timeout

    def send(self, report: HeartbeatReport) -> HeartbeatReply:
        from modelseal.guard.core import HeartbeatReply

        if report.credential is None or report.device_id is None:
            raise ServerError("this license has no device credential to authenticate with")
        body = request_body(report)
        _, data = call(
            "POST",
            self.url,
            data=body,
            headers={
                "Content-Type": "application/json",
                "Authorization": authorization_header(report.credential, body),
            },
            timeout=self.timeout,
        )
        try:
            token = json.loads(data)["reply"]
        except (ValueError, KeyError, TypeError):
            raise ServerError("the heartbeat answer carries no reply") from None
        if not isinstance(token, str):
            raise ServerError("the heartbeat reply is not a string")
        return HeartbeatReply(token=token)


def next_delay(interval: float, failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to the next beat: the interval with jitter, or back-off after failures."""
    base = interval if failures == 0 else min(interval, MIN_BACKOFF * 2 ** (failures - 1))
    return max(0.05, base * (1 + JITTER * (2 * rand() - 1)))


class HeartbeatThread:
    """Runs ``guard.heartbeat_now()`` in the background until stopped."""

    def __init__(self, guard: Guard, interval: float, *, first_delay: float = 0.0) -> None:
        self._guard = guard
        self._interval = interval
        self._first_delay = first_delay
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modelseal-heartbeat", daemon=True)
        self.failures = 0
        self.beats = 0

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Beat now rather than at the next interval (a lease runs low); at most 1/s."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        delay = self._first_delay
        while True:
            self._wake.wait(delay)
            if self._stop.is_set():
                return
            if self._wake.is_set():
                self._wake.clear()
                # woken beats stay at most one a second, whatever wakes them
                if self._stop.wait(1.0 if self.beats or self.failures else 0.0):
                    return
            try:
                verdict = self._guard.heartbeat_now()
            except (ModelsealError, OSError):
                # unreachable, refused or a reply that does not verify: grace keeps running
                self.failures += 1
            else:
                self.failures = 0
                self.beats += 1
                if verdict.interval:
                    self._interval = float(verdict.interval)
            delay = next_delay(self._interval, self.failures)
            if self.failures == 0 and _backlog(self._guard):
                delay = min(delay, BACKLOG_DELAY)


async def heartbeat_task(guard: Guard, interval: float) -> None:
    """The same loop as an asyncio task, for async apps: ``asyncio.create_task(...)``.

    Each beat runs in a worker thread (``asyncio.to_thread``), so the event
    loop never waits on the network.
    """
    failures = 0
    delay = 0.0
    while True:
        await asyncio.sleep(delay)
        try:
            verdict = await asyncio.to_thread(guard.heartbeat_now)
        except (ModelsealError, OSError):
            failures += 1
        else:
            failures = 0
            if verdict.interval:
                interval = float(verdict.interval)
        delay = next_delay(interval, failures)
        if failures == 0 and _backlog(guard):
            delay = min(delay, BACKLOG_DELAY)


__all__ = ["HeartbeatThread", "HttpHeartbeatClient", "heartbeat_task", "next_delay"]
