"""The Guard: verifies a license once, then enforces it on every call, cheaply.

``Guard.verify()`` does the expensive work (signature, claims, device
binding, the device-bound state key, clock and quota checks). ``check()``
is the per-call path: a few attribute reads and a monotonic clock read,
plus a counter decrement when calls are limited, measured in
bench/guard_overhead.py. The expensive checks rerun every
``recheck_every`` (and at expiry), so a rolled-back clock, a revocation or
an expiry takes effect within that interval.

Callers learn little: every refusal raises :class:`NotLicensedError`
("not licensed") carrying only a reason code; the audit log records the
precise reason and detail.

Usage counting reserves blocks of calls from the shared state file under
an exclusive lock and counts down in memory: correct across threads and
processes (the total never exceeds the limit), conservative on a crash
(a dead process's unused reservation counts as used), and cheap per call.
A forked child starts with no reservation (``os.register_at_fork``): the
parent's block is the parent's, so fork cannot multiply it.

Every audit record is appended and anchored in the state file inside one
state transaction (:meth:`Guard._txn`): the append checks that the log
still ends at the anchor, and a state write that fails takes its record
back, so a full disk is a typed, retried refusal (``storage_unavailable``)
and never leaves the log ahead of its anchor, i.e. never a tamper verdict.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from modelseal.crypto import ContentKey, PublicKey, hkdf_sha256
from modelseal.device import DeviceFingerprint, FingerprintSource, collect
from modelseal.errors import ModelsealError
from modelseal.guard.clock import ClockState, Verdict, observe, offline_grace_ok
from modelseal.guard.state import GuardState, StateStore
from modelseal.license import (
    ClockRollbackError,
    EnvironmentRefusedError,
    KeyDeliveryError,
    License,
    LicenseError,
    LicenseExpiredError,
    LicenseNotYetValidError,
    LicenseRevokedError,
    OfflineGraceExceededError,
    QuotaExceededError,
    StateTamperedError,
    TrustedKey,
    TrustStore,
    WrongAudienceError,
    WrongDeviceError,
    verify_license,
)
from modelseal.license.heartbeat import (
    CONTACT_CODES,
    LOCKING_CODES,
    MAX_LEASE,
    HeartbeatReplyError,
    HeartbeatVerdict,
    device_credential,
    new_nonce,
    verify_reply,
)
from modelseal.license.keydelivery import state_key, unwrap_content_key
from modelseal.license.verify import license_kek, read_unverified
from modelseal.loaders.dispatch import SealedModel

Clock = Callable[[], datetime]


class _AnyProduct(enum.Enum):
    ANY = "any"


#: ``Guard(..., audience=ANY_PRODUCT)``: accept a license for any product.
#: Only for tools that inspect licenses (``modelseal guard status``); a
#: service names the model ids it is, so another product's license is refused.
ANY_PRODUCT: Final = _AnyProduct.ANY


class UnlockRateLimitedError(LicenseError):
    """Too many wrong unlock codes in the last hour (online guessing defence)."""

    reason = "unlock_rate_limited"
    exit_code = 17


class GuardStorageError(LicenseError):
    """The guard could not read or write its state or audit log (disk full, I/O error).

    Not a verdict about the license: nothing was written, the next call
    retries, and recovery needs no unlock code. Web integrations can answer
    503 for it (``unavailable_status``) so clients retry.
    """

    reason = "storage_unavailable"
    exit_code = 19


class NotLicensedError(LicenseError):
    """What callers of a guarded model see. ``reason`` is the audit reason code."""

    def __init__(self, reason: str) -> None:
        super().__init__("not licensed", reason=reason)


#: what a locking heartbeat code becomes as the Guard's refusal reason
_LOCK_REASONS: Final = {
    "REVOKED": "revoked",
    "SUSPENDED": "suspended",
    "FINGERPRINT_MISMATCH": "wrong_device",
    "TOO_MANY_DEVICES": "too_many_devices",
    "AUDIT_ROLLBACK": "state_tampered",
}


@dataclass(frozen=True)
class HeartbeatReport:
    """What the Guard reports. ``nonce`` is fresh per beat: the reply must echo it."""

    license_id: str
    device_id: str | None
    calls_reserved: int
    time: float
    audit_head: list[object] | None
    nonce: str = ""
    #: the device credential (from the license KEK): only the bound device has it
    credential: bytes | None = field(default=None, repr=False)
    #: calls this beat asks to lease (server-side quotas); 0 asks for none
    lease: int = 0
    #: device audit records after the server's ``ack`` (guard/shipping.py)
    audit_records: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class HeartbeatReply:
    """What a client hands back: the server's signed reply, *unverified*.

    There is deliberately no ``ok`` flag a client could set: the Guard
    verifies ``token`` itself (trust store, issuer, the nonce it sent,
    license and device ids) and a reply that does not verify counts as no
    reply at all (docs/controlplane.md, "Heartbeats"; #8 item 16).
    """

    token: str


class HeartbeatClient(Protocol):
    """Carries a report to the license server and its signed reply back."""

    def send(self, report: HeartbeatReport) -> HeartbeatReply: ...


def _leased(lic: License) -> bool:
    """Server-side quotas: the license states an offline allowance and names a server."""
    return lic.claims.limits.offline_calls is not None and lic.claims.heartbeat is not None


def _call_cap(lic: License, st: GuardState) -> int | None:
    """How far ``calls_reserved`` may run now (None: no call limit).

    Without leases: the license's ``limits.calls``, counted on the device.
    With them: the end of the leases the server granted (a lapsed lease's
    unspent calls are forfeit) plus the offline allowance, which a
    ``QUOTA_EXCEEDED`` from the server withdraws; never past ``limits.calls``.
    """
    limit = lic.claims.limits.calls
    allowance = lic.claims.limits.offline_calls
    if allowance is None or lic.claims.heartbeat is None:
        return limit
    if st.lease_exp is not None and st.trusted is not None and st.trusted > st.lease_exp:
        st.lease_end = min(st.lease_end, st.calls_reserved)
        st.lease_exp = None
    cap = st.lease_end + (0 if st.quota_blocked else allowance)
    return cap if limit is None else min(cap, limit)


def _quota_error(lic: License, st: GuardState) -> QuotaExceededError:
    limit = lic.claims.limits.calls
    if not _leased(lic) or (limit is not None and st.calls_reserved >= limit):
        return QuotaExceededError(f"all {limit} licensed calls are used")
    if st.quota_blocked:
        return QuotaExceededError("the license server reports the license's calls used up")
    return QuotaExceededError(
        "no leased calls left and the offline allowance is spent: waiting for the license server"
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def default_state_dir() -> Path:
    env = os.environ.get("MODELSEAL_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(base) / "modelseal"


def _read_token(license: str | os.PathLike[str] | License) -> str:
    if isinstance(license, License):
        return license.token
    text = os.fspath(license)
    looks_like_token = text.strip().count(".") == 2 and "/" not in text
    # file names are at most 255 bytes, and a token is never an existing path
    if looks_like_token and (len(text) > 255 or not Path(text).exists()):
        return text.strip()
    try:
        return Path(text).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise NotLicensedError("license_unreadable") from exc


def _trust(trust: TrustStore | PublicKey | str | os.PathLike[str] | Iterable[Any]) -> TrustStore:
    if isinstance(trust, TrustStore):
        return trust
    if isinstance(trust, PublicKey | TrustedKey):
        return TrustStore([trust])
    if isinstance(trust, str | os.PathLike):
        return TrustStore.load(trust)
    items = list(trust)
    store = TrustStore.load(*(i for i in items if not isinstance(i, PublicKey | TrustedKey)))
    for item in items:
        if isinstance(item, PublicKey | TrustedKey):
            store.add(item)
    return store


class Guard:
    def __init__(
        self,
        license: str | os.PathLike[str] | License,
        trust: TrustStore | PublicKey | str | os.PathLike[str] | Iterable[Any],
        *,
        state_dir: str | os.PathLike[str] | None = None,
        source: FingerprintSource | None = None,
        audience: str | Sequence[str] | Literal[_AnyProduct.ANY] | None = None,
        issuer: str | None = None,
        clock: Clock = _utcnow,
        leeway: timedelta = timedelta(seconds=60),
        rollback_tolerance: timedelta = timedelta(minutes=5),
        recheck_every: timedelta = timedelta(seconds=30),
        reserve_calls: int = 64,
        lease_calls: int = 1000,
        heartbeat: HeartbeatClient | None = None,
        auto_heartbeat: bool = True,
        verify: bool = True,
    ) -> None:
        if audience is None:
            raise TypeError(
                "Guard needs audience=: the model id(s) of the product this service is "
                "(a license for another product is refused); tools that inspect any "
                "license pass modelseal.guard.ANY_PRODUCT"
            )
        if not isinstance(audience, _AnyProduct | str) and not list(audience):
            raise ValueError("audience= needs at least one model id")
        self._token = _read_token(license)
        self._license_path = (
            None
            if isinstance(license, License) or self._token == os.fspath(license).strip()
            else Path(license)
        )
        self._trust = _trust(trust)
        self._state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self._source = source
        self._audience: str | list[str] | None = (
            None
            if isinstance(audience, _AnyProduct)
            else audience
            if isinstance(audience, str)
            else list(audience)
        )
        self._issuer = issuer
        self._clock = clock
        self._leeway = leeway
        self._tolerance = rollback_tolerance
        self._recheck_every = recheck_every.total_seconds()
        self._reserve_calls = max(1, reserve_calls)
        self._lease_calls = min(max(1, lease_calls), MAX_LEASE)
        self._heartbeat = heartbeat
        self._auto_heartbeat = auto_heartbeat and heartbeat is None
        self._heartbeat_thread: Any = None
        self._lock = threading.Lock()
        self._fingerprint: DeviceFingerprint | None = None
        self._license: License | None = None
        self._store: StateStore | None = None
        self._audit: Any = None
        # audit shipping (guard/shipping.py): the server's last ack, None until it says one
        self._audit_ack: int | None = None
        self._shipper: Any = None
        self._keys: dict[str, ContentKey] = {}
        self._kek: tuple[str, bytes] | None = None
        # hot-path fields
        self._denied: str | None = "not_verified"
        self._recheck_at = 0.0
        self._features: frozenset[str] = frozenset()
        self._calls_limited = False
        self._reserved_left = 0
        self._registered_exit = False
        self._feature_refusals: dict[str, tuple[float, int]] = {}
        self._pid = os.getpid()
        _GUARDS.add(self)
        if verify:
            self.verify()

    def _after_fork_in_child(self) -> None:
        """A forked child owns no calls: the parent's reserved block stays the parent's.

        Without this a pre-fork server or a fork-started ``multiprocessing.Pool``
        lets every child spend the parent's in-memory block, and a child's
        ``atexit`` give-back returns calls it never reserved. Locks are
        renewed: another thread of the parent may have held them at fork.
        """
        self._lock = threading.Lock()
        self._reserved_left = 0
        self._pid = os.getpid()
        if self._store is not None:
            self._store.after_fork()
        if self._audit is not None:
            self._audit.after_fork()

    @classmethod
    def from_env(cls, **kwargs: Any) -> Guard:
        """``MODELSEAL_LICENSE``, ``MODELSEAL_TRUST`` (``:``-separated ``[ISSUER=]PATH``
        entries, docs/license.md), ``MODELSEAL_STATE_DIR``.

        The product (``audience=``) comes from the caller's code, never from
        the environment: the environment is the customer's to set.
        """
        license = os.environ.get("MODELSEAL_LICENSE")
        trust = os.environ.get("MODELSEAL_TRUST")
        if not license or not trust:
            raise NotLicensedError("not_configured")
        return cls(license, TrustStore.from_env_value(trust), **kwargs)

    # --- properties -------------------------------------------------------------

    @property
    def license(self) -> License:
        if self._license is None:
            raise NotLicensedError(self._denied or "not_verified")
        return self._license

    @property
    def fingerprint(self) -> DeviceFingerprint:
        if self._fingerprint is None:
            self._fingerprint = collect(self._source)
        return self._fingerprint

    @property
    def audit_path(self) -> Path:
        return self._audit_path(self._license.claims.jti if self._license else None)

    def _audit_path(self, jti: str | None) -> Path:
        return self._state_dir / f"{jti or 'unverified'}.audit.jsonl"

    # --- state and audit: one transaction per change -------------------------------

    def _audit_log(self, jti: str | None) -> Any:
        from modelseal.guard.audit import AuditLog

        path = self._audit_path(jti)
        if self._audit is None or Path(self._audit.path) != path:
            self._state_dir.mkdir(parents=True, exist_ok=True)
            self._audit = AuditLog(path, clock=self._clock)
        return self._audit

    def _first_run(self, jti: str) -> Callable[[], bool]:
        """May a missing state file be created? Only while the license has no audit log:
        a log without its state means the state was deleted (asked under the state lock)."""
        path = self._audit_path(jti)

        def allowed() -> bool:
            try:
                return path.stat().st_size == 0
            except FileNotFoundError:
                return True

        return allowed

    @contextlib.contextmanager
    def _txn(
        self,
        store: StateStore | None = None,
        *,
        jti: str | None = None,
        create: bool | Callable[[], bool] = False,
    ) -> Iterator[_Txn]:
        """A state transaction that can append audit records and anchor them.

        Records are appended under the state lock, after checking the log still
        ends at the state's anchor, and the new anchor is written with the
        state. If anything fails before the state is written (a refusal raised
        in the body, a full disk), the records are taken back off the log, so
        the log never runs ahead of its anchor by more than a crash can leave.
        """
        store = store or self._store
        assert store is not None
        txn = _Txn(self._audit_log(jti or (self._license.claims.jti if self._license else None)))
        try:
            with store.transaction(create=create) as st:
                txn.state = st
                yield txn
        except BaseException:
            txn.take_back()
            raise

    def _storage_error(self, exc: OSError) -> GuardStorageError:
        return GuardStorageError(f"guard state or audit log: {exc.strerror or exc}")

    def _log(self, event: str, *, reason: str | None = None, **data: Any) -> None:
        """Append an anchored audit record in its own state transaction."""
        with self._txn() as t:
            t.log(event, reason=reason, **data)

    def _refuse(self, error: LicenseError, *, sticky: bool = True) -> NotLicensedError:
        """Audit a refusal and return what the caller sees.

        ``sticky`` refusals are about the license as a whole (expired, revoked,
        tampered, over quota) and hold until the next full verification; a
        refusal of one model or feature is only that call's (``sticky=False``).
        A storage failure is never sticky: the next call retries the slow path.
        """
        if isinstance(error, GuardStorageError):
            self._recheck_at = 0.0
        elif sticky:
            self._denied = error.reason
        from modelseal.guard.audit import AuditFormatError, AuditTamperedError

        # refusing must not depend on the log being writable
        with contextlib.suppress(OSError, ModelsealError):
            try:
                if isinstance(error, StateTamperedError) or self._store is None:
                    # never anchor on top of a log or state found tampered: that
                    # would make the next start accept the tampered log
                    self._audit_log(None if self._store is None else self._license_id()).append(
                        "refused", reason=error.reason, data={"detail": str(error)}
                    )
                else:
                    self._log("refused", reason=error.reason, detail=str(error))
            except (StateTamperedError, AuditTamperedError, AuditFormatError) as tamper:
                self._record_beside_tampered_log(error, tamper)
        return NotLicensedError(error.reason)

    def _record_beside_tampered_log(self, error: LicenseError, tamper: ModelsealError) -> None:
        """The license's log was tampered so that it cannot be extended: record the
        refusal, unanchored, in ``unverified.audit.jsonl`` instead.

        Without this the tampering that refuses the license was recorded
        nowhere. The tampered log is left as found (it is the evidence, and
        the state's anchor still names its genuine head), never repaired or
        extended (docs/guard-audit-unlock.md, "Refusals the license's log
        cannot take").
        """
        from modelseal.guard.audit import AuditLog

        jti = self._license_id()
        if self._store is None or jti is None:
            return  # it was the unverified log itself that refused the record
        AuditLog(self._audit_path(None), clock=self._clock).append(
            "refused",
            reason=error.reason,
            data={"detail": str(error), "license": jti, "audit_log_tampered": str(tamper)},
        )

    def _license_id(self) -> str | None:
        return self._license.claims.jti if self._license is not None else None

    def _refuse_unverified(self, error: LicenseError) -> NotLicensedError:
        """A refusal before the license verified on this device, anchored where possible.

        A date or environment refusal is raised after the signature, issuer and
        audience checks passed: the license is genuine. When this device also
        opens its state (the bound device, an expired license), the refusal
        goes into the license's own log and is anchored, so deleting it shows;
        otherwise (wrong device, bad signature) there is no state on this
        device to anchor in, and it goes to ``unverified.audit.jsonl``.
        """
        self._denied = error.reason
        with contextlib.suppress(OSError, ModelsealError):
            if isinstance(
                error,
                LicenseExpiredError
                | LicenseNotYetValidError
                | EnvironmentRefusedError
                | WrongDeviceError,
            ):
                lic = self._genuine_license()
                if lic is not None:
                    with contextlib.suppress(LicenseError):
                        store = self._open_store(lic)
                        with self._txn(
                            store, jti=lic.claims.jti, create=self._first_run(lic.claims.jti)
                        ) as t:
                            t.log("refused", reason=error.reason, detail=str(error))
                        return NotLicensedError(error.reason)
            self._audit_log(None).append(
                "refused", reason=error.reason, data={"detail": str(error)}
            )
        return NotLicensedError(error.reason)

    def _genuine_license(self) -> License | None:
        """The license with its signature, issuer and audience checked, dates ignored."""
        try:
            _, claims = read_unverified(self._token)
            nbf = claims.get("nbf")
            if not isinstance(nbf, int) or isinstance(nbf, bool):
                return None
            return verify_license(
                self._token,
                self._trust,
                audience=self._audience,
                issuer=self._issuer,
                now=datetime.fromtimestamp(nbf, UTC),
                leeway=self._leeway,
            )
        except (LicenseError, ValueError, OverflowError, OSError):
            return None

    def _open_store(self, lic: License) -> StateStore:
        """The license's state store; raises a LicenseError where its key does not open."""
        return StateStore(
            self._state_dir / f"{lic.claims.jti}.state", self._state_key(lic), lic.claims.jti
        )

    # --- verification -------------------------------------------------------------

    def _check_token(self, *, with_device: bool) -> License:
        """Signature, claims, dates (and the device binding) of the current token, now."""
        return verify_license(
            self._token,
            self._trust,
            audience=self._audience,
            issuer=self._issuer,
            now=self._clock(),
            leeway=self._leeway,
            fingerprint=self.fingerprint if with_device else None,
        )

    def _verify_token(self, *, with_device: bool) -> License:
        """:meth:`_check_token`, remembering the license."""
        lic = self._check_token(with_device=with_device)
        self._license = lic
        return lic

    def verify(self) -> License:
        """Full verification; raises :class:`NotLicensedError` with the reason code."""
        with self._lock:
            try:
                lic = self._check_token(with_device=True)
                store = self._open_store(lic)
            except LicenseError as exc:
                raise self._refuse_unverified(exc) from None
            self._license, self._store = lic, store
            try:
                with self._txn(create=self._first_run(lic.claims.jti)) as t:
                    self._check_audit_anchor(t.state)
                    self._check_state(t.state, first=True)
                    t.log("verified", license=lic.claims.jti, customer=lic.claims.sub)
            except OfflineGraceExceededError as exc:
                # still beat: one verified reply is how this device recovers (#8, item 16)
                error = self._refuse(exc)
                self._start_heartbeats_if_named(lic)
                raise error from None
            except QuotaExceededError as exc:
                # with leases, the next lease is how this device gets calls again
                error = self._refuse(exc)
                if _leased(lic):
                    self._start_heartbeats_if_named(lic)
                raise error from None
            except LicenseError as exc:
                raise self._refuse(exc) from None
            except OSError as exc:
                raise self._refuse(self._storage_error(exc)) from None
            self._features = frozenset(lic.claims.entitlements)
            self._calls_limited = lic.claims.limits.calls is not None or _leased(lic)
            self._denied = None
            self._schedule_recheck()
        self._start_heartbeats_if_named(lic)
        return lic

    def _start_heartbeats_if_named(self, lic: License) -> None:
        """The license names a heartbeat URL: beat to it from a background thread."""
        if not self._auto_heartbeat or lic.claims.heartbeat is None:
            return
        thread = self._heartbeat_thread
        if thread is not None and thread.alive:
            return
        from modelseal.guard.heartbeat import HeartbeatThread, HttpHeartbeatClient

        if self._heartbeat is None:
            self._heartbeat = HttpHeartbeatClient(lic.claims.heartbeat.url)
        self._heartbeat_thread = HeartbeatThread(self, lic.claims.heartbeat.interval)
        self._heartbeat_thread.start()

    def _wake_heartbeat(self) -> None:
        """Beat soon (a lease runs low): the thread does it, never the calling request."""
        thread = self._heartbeat_thread
        if thread is not None:
            thread.wake()

    def stop_heartbeats(self) -> None:
        thread, self._heartbeat_thread = self._heartbeat_thread, None
        if thread is not None:
            thread.stop()

    def _license_kek(self, lic: License) -> bytes:
        """The license KEK, rebuilt from this device's shares once per license."""
        cached = self._kek
        if cached is None or cached[0] != lic.claims.jti:
            cached = self._kek = (lic.claims.jti, license_kek(lic, self.fingerprint))
        return cached[1]

    def _state_key(self, lic: License) -> bytes:
        if lic.claims.keys is not None:
            # opens only where the device's components rebuild the license KEK
            return state_key(self._license_kek(lic), jti=lic.claims.jti)
        # An unbound license has no device secret: the state is still
        # authenticated, but a copy of the license could recompute this key.
        return hkdf_sha256(
            self._token.encode(), salt=b"", info=b"modelseal/unbound-state", length=32
        )

    def _schedule_recheck(self) -> None:
        lic = self.license
        delay = self._recheck_every
        if lic.claims.exp is not None:
            # at least a second: just past exp (inside the leeway) every call
            # would otherwise re-verify and write the state file
            delay = min(delay, max(1.0, lic.claims.exp - self._clock().timestamp()))
        self._recheck_at = time.monotonic() + delay

    def _check_state(self, st: GuardState, *, first: bool = False) -> None:
        lic = self.license
        trusted = self._check_clock(st, self._clock())
        if st.revoked:
            raise LicenseRevokedError("the license was revoked")
        if lic.claims.exp is not None and trusted - self._leeway.total_seconds() >= (
            lic.claims.exp
        ):
            # the wall clock may say otherwise; the forward-only clock does not
            raise LicenseExpiredError("the license has expired")
        cap = _call_cap(lic, st)
        if cap is not None and st.calls_reserved >= cap and first:
            raise _quota_error(lic, st)
        self._check_grace(st)

    def _check_audit_anchor(self, st: GuardState) -> None:
        """The state remembers the log's last record: a cut, edited or swapped log shows."""
        from modelseal.guard.audit import verify as verify_audit

        if st.audit_head is None:
            return
        seq, digest = int(str(st.audit_head[0])), str(st.audit_head[1])
        if not self.audit_path.exists():
            raise StateTamperedError("the audit log was deleted")
        report = verify_audit(self.audit_path, expected_head=(seq, digest))
        if report.problem is not None:
            raise StateTamperedError(f"the audit log was modified: {report.problem.message}")
        if report.head is not None and report.head[0] > seq + 1:
            # more than the one record a crash can leave unanchored: this state
            # file is older than the log (a saved copy put back to reset counters)
            raise StateTamperedError("the guard state is older than its audit log")

    @staticmethod
    def _advance(st: GuardState, now: datetime) -> None:
        """Fold one wall-clock reading into the forward-only clock.

        ``trusted`` starts at the first reading and then grows by every forward
        step of the wall clock between readings; steps back add nothing. So
        setting the clock back neither revives an expired license nor stretches
        an unlock window or the offline grace, whatever an unlock allows.
        """
        ts = now.timestamp()
        if st.first_seen is None:
            st.first_seen = ts
        if st.trusted is None or st.last_wall is None:
            st.trusted = max(ts, st.high_water or ts)
        elif ts > st.last_wall:
            st.trusted += ts - st.last_wall
        st.last_wall = ts
        if st.last_heartbeat_ok is None:
            # activation counts as the first heartbeat: grace starts now
            st.last_heartbeat_ok = st.trusted
        if st.unlock_until is not None and st.trusted > st.unlock_until:
            st.unlock_until = None  # a spent unlock window is gone for good

    def _check_clock(self, st: GuardState, now: datetime) -> float:
        """Advance the clocks; raise on a rollback beyond tolerance. Returns trusted time."""
        self._advance(st, now)
        assert st.trusted is not None
        state = (
            ClockState.start(now)
            if st.high_water is None
            else ClockState(high_water=datetime.fromtimestamp(st.high_water, UTC))
        )
        new, verdict = observe(state, now, tolerance=self._tolerance)
        unlocked = st.unlock_until is not None
        if verdict == Verdict.CLOCK_ROLLBACK and not unlocked:
            back = (state.high_water - now).total_seconds()
            allowed = self._tolerance.total_seconds()
            raise ClockRollbackError(f"the clock went back {back:.0f}s (tolerance {allowed:.0f}s)")
        st.high_water = max(st.high_water or 0.0, new.high_water.timestamp())
        return st.trusted

    def _check_grace(self, st: GuardState) -> None:
        lic = self.license
        if lic.claims.grace is None or lic.claims.heartbeat is None or st.unlock_until is not None:
            return
        assert st.trusted is not None
        assert st.last_heartbeat_ok is not None
        state = ClockState(
            high_water=datetime.fromtimestamp(st.trusted, UTC),
            last_heartbeat_ok=datetime.fromtimestamp(st.last_heartbeat_ok, UTC),
        )
        if not offline_grace_ok(state, state.high_water, timedelta(seconds=lic.claims.grace)):
            raise OfflineGraceExceededError(
                f"no successful heartbeat within the offline grace of {lic.claims.grace}s"
            )

    def _recheck(self) -> None:
        with self._lock:
            if time.monotonic() < self._recheck_at:
                return
            try:
                self._verify_token(with_device=False)
                with self._txn() as t:
                    t.expect_anchored_head()
                    self._check_state(t.state)
            except LicenseError as exc:
                raise self._refuse(exc) from None
            except OSError as exc:
                raise self._refuse(self._storage_error(exc)) from None
            self._schedule_recheck()

    # --- the per-call path --------------------------------------------------------

    def check(self, feature: str | Sequence[str] | None = None, *, count: bool = True) -> None:
        """Raise :class:`NotLicensedError` unless this call is licensed (and count it).

        ``feature`` may be several features a call needs at once (counted as one call).
        ``count=False`` checks without using a licensed call: for requests that do
        no work the license sells (a model service's metadata and readiness).
        """
        if self._denied is not None:
            raise NotLicensedError(self._denied)
        if time.monotonic() >= self._recheck_at:
            self._recheck()
        if feature is not None:
            if isinstance(feature, str):
                if feature not in self._features:
                    self._log_feature_refusal(feature)
                    raise NotLicensedError("feature_missing")
            else:
                for one in feature:
                    if one not in self._features:
                        self._log_feature_refusal(one)
                        raise NotLicensedError("feature_missing")
        if count and self._calls_limited:
            with self._lock:
                if self._reserved_left <= 0:
                    self._reserve()
                self._reserved_left -= 1

    def _log_feature_refusal(self, feature: str) -> None:
        """Audit refused feature calls, at most once a second per feature.

        Each audit record is an append plus an fsynced state write; a caller
        hammering an unlicensed feature must not turn into disk I/O per
        request. The suppressed refusals are counted in the next record.
        """
        now = time.monotonic()
        # no default "last record at 0.0": the monotonic clock counts from boot,
        # so that default hid a first refusal in the first second after boot
        previous = self._feature_refusals.get(feature)
        suppressed = 0
        if previous is not None:
            last, suppressed = previous
            if now - last < 1.0:
                self._feature_refusals[feature] = (last, suppressed + 1)
                return
        self._feature_refusals[feature] = (now, 0)
        with contextlib.suppress(OSError, ModelsealError):
            self._log(
                "refused",
                reason="feature_missing",
                feature=feature,
                also_refused_since_last_record=suppressed,
            )

    async def acheck(
        self, feature: str | Sequence[str] | None = None, *, count: bool = True
    ) -> None:
        """``check`` for async code: the rare slow path runs in a worker thread."""
        if (
            self._denied is None
            and time.monotonic() < self._recheck_at
            and (
                feature is None
                or (
                    feature in self._features
                    if isinstance(feature, str)
                    else all(f in self._features for f in feature)
                )
            )
            and (not count or not self._calls_limited or self._reserved_left > 0)
        ):
            self.check(feature, count=count)
            return
        await asyncio.to_thread(functools.partial(self.check, feature, count=count))

    def _reserve(self) -> None:
        lic = self.license
        leased = _leased(lic)
        low = False
        try:
            with self._txn() as t:
                st = t.state
                self._check_clock(st, self._clock())
                cap = _call_cap(lic, st)
                assert cap is not None
                remaining = cap - st.calls_reserved
                if remaining <= 0:
                    low = leased
                    raise _quota_error(lic, st)
                take = min(self._reserve_calls, remaining)
                st.calls_reserved += take
                # Logged and anchored in the same transaction: a saved copy of an
                # older state file no longer matches the log's head (replay).
                t.log("reserved", calls=take, total=st.calls_reserved)
                # half the lease spent: ask for the next one now, off this path
                low = leased and st.lease_end - st.calls_reserved < self._lease_calls // 2
        except LicenseError as exc:
            if low:
                self._wake_heartbeat()
            raise self._refuse(exc) from None
        except OSError as exc:
            # nothing was reserved (the state write is the commit): refuse this
            # call, typed, and try again on the next one
            raise self._refuse(self._storage_error(exc)) from None
        self._reserved_left = take
        if low:
            self._wake_heartbeat()
        if not self._registered_exit:
            atexit.register(self.close)
            self._registered_exit = True

    def close(self) -> None:
        """Stop heartbeats; give back this process's unused reserved calls."""
        self.stop_heartbeats()
        with self._lock:
            left, self._reserved_left = self._reserved_left, 0
            if left <= 0 or self._store is None or self._pid != os.getpid():
                return  # a forked child never gives back what its parent reserved
            with contextlib.suppress(OSError, ModelsealError), self._txn() as t:
                t.state.calls_reserved = max(0, t.state.calls_reserved - left)

    def state(self) -> GuardState | None:
        """The guard's state as last written (read-only; for ``guard status``)."""
        return self._store.read() if self._store is not None else None

    def usage(self) -> int:
        """Calls used so far on this device (reserved by all processes, minus ours unused)."""
        assert self._store is not None
        try:
            st = self._store.read()
        except OSError as exc:
            raise NotLicensedError(self._storage_error(exc).reason) from None
        if st is None:
            raise StateTamperedError("the guard state file was deleted")
        return st.calls_reserved - self._reserved_left

    # --- keys and models ----------------------------------------------------------

    def content_key(self, key_id: str) -> ContentKey:
        self.check()
        if key_id not in self._keys:
            try:
                lic = self.license
                if lic.claims.keys is None:
                    raise KeyDeliveryError("the license delivers no content keys")
                self._keys[key_id] = unwrap_content_key(
                    lic.claims.keys, self._license_kek(lic), jti=lic.claims.jti, key_id=key_id
                )
            except LicenseError as exc:
                # a key this license does not deliver refuses this load, not the license
                raise self._refuse(exc, sticky=False) from None
        return self._keys[key_id]

    def open(self, path: str | os.PathLike[str]) -> SealedModel:
        """Check the license and open the model with the key it delivers to this device."""
        from modelseal.sealed import read_header

        header = read_header(path)
        if header.model_id is not None and header.model_id not in self.license.claims.aud:
            raise self._refuse(
                WrongAudienceError(f"model {header.model_id!r} is not licensed"), sticky=False
            )
        return SealedModel(path, self.content_key(header.key_id))

    def load(
        self, path: str | os.PathLike[str], framework: str | None = None, **kwargs: Any
    ) -> Any:
        """Check the license, open the model's key on this device, load from memory."""
        with self.open(path) as model:
            return model.load(framework, **kwargs)

    # --- heartbeats, revocation and emergency unlock ------------------------------

    def heartbeat_now(self) -> HeartbeatVerdict:
        """Report to the license server and act on its signed reply.

        Works on a Guard that is currently refusing (offline grace exceeded,
        suspended): a verified ``VALID`` reply is how such a device recovers.
        Only a reply that verifies under the trust store and echoes this
        beat's nonce counts; anything else raises and changes nothing.
        """
        if self._heartbeat is None:
            raise NotLicensedError("no_heartbeat_client")
        lic = self._license
        store = self._store
        if lic is None or store is None:
            raise NotLicensedError(self._denied or "not_verified")
        device_id = lic.claims.device.device_id if lic.claims.device else None
        credential = (
            device_credential(self._license_kek(lic), jti=lic.claims.jti)
            if lic.claims.keys is not None
            else None
        )
        with store.snapshot() as current:
            # the time and the head together, under the state lock: beats of this
            # device's processes report heads in the order of their times. The
            # time never goes back (the server refuses older beats as replays):
            # the forward-only clock's high-water mark, which signed server
            # times also raise.
            now_ts = self._clock().timestamp()
            if current is not None and current.high_water is not None:
                now_ts = max(now_ts, current.high_water)
            shipped: tuple[dict[str, Any], ...] = ()
            if self._audit_ack is not None and current is not None and current.audit_head:
                from modelseal.guard.shipping import AuditShipper

                if self._shipper is None or self._shipper.path != os.fspath(self.audit_path):
                    self._shipper = AuditShipper(self.audit_path)
                shipped = self._shipper.batch(self._audit_ack, int(str(current.audit_head[0])))
        want = 0
        if _leased(lic) and current is not None:
            left = current.lease_end - current.calls_reserved
            if left < self._lease_calls // 2:
                want = self._lease_calls
        elif _leased(lic):
            want = self._lease_calls
        nonce = new_nonce()
        report = HeartbeatReport(
            license_id=lic.claims.jti,
            device_id=device_id,
            calls_reserved=current.calls_reserved if current else 0,
            time=now_ts,
            audit_head=current.audit_head if current else None,
            nonce=nonce,
            credential=credential,
            lease=want,
            audit_records=shipped,
        )
        reply = self._heartbeat.send(report)
        token = reply.token if isinstance(reply, HeartbeatReply) else None
        try:
            if not isinstance(token, str):
                raise HeartbeatReplyError("the heartbeat client returned no signed reply")
            verdict = verify_reply(
                token,
                self._trust,
                license_id=lic.claims.jti,
                device_id=device_id or "",
                nonce=nonce,
                issuer=lic.claims.iss,
            )
        except HeartbeatReplyError as exc:
            with contextlib.suppress(OSError, ModelsealError):
                self._log("heartbeat_refused", reason=exc.reason, detail=str(exc))
            raise
        self._audit_ack = verdict.audit_ack
        with self._txn() as t:
            st = t.state
            now = self._clock()
            self._advance(st, now)
            assert st.trusted is not None
            # the signed server time: a device clock set back is caught, and
            # the forward-only clock is never behind the server's
            st.high_water = max(st.high_water or 0.0, now.timestamp(), float(verdict.server_time))
            st.trusted = max(st.trusted, float(verdict.server_time))
            if verdict.code == "REVOKED":
                st.revoked = True
            elif verdict.code in CONTACT_CODES:
                # on the forward-only clock: a clock set ahead for one heartbeat
                # and back afterwards buys no grace
                st.last_heartbeat_ok = st.trusted
            lease = verdict.lease if _leased(lic) else None
            if lease is not None:
                st.lease_end = max(st.lease_end, lease.end)
                st.lease_exp = float(lease.exp)
                st.quota_blocked = False
            elif verdict.code == "QUOTA_EXCEEDED":
                # the server's ledger is full: no more offline allowance either
                st.quota_blocked = True
            t.log(
                "heartbeat",
                reason=None if verdict.ok else verdict.code.lower(),
                code=verdict.code,
                **({"lease": [lease.start, lease.end, lease.exp]} if lease else {}),
            )
        if verdict.code in LOCKING_CODES:
            self._denied = _LOCK_REASONS[verdict.code]
            self._log("locked", reason=self._denied, message=verdict.message)
        elif verdict.ok:
            if verdict.license_token is not None:
                self._swap_license(verdict.license_token, lic)
            if self._denied is not None:
                with contextlib.suppress(NotLicensedError):
                    self.verify()  # e.g. grace had run out, or a suspension was lifted
        return verdict

    def import_revocations(self, source: str | os.PathLike[str]) -> bool:
        """Apply a signed revocation list (a file, or the token) for sites no heartbeat reaches.

        The list must be signed by a trusted key of this license's issuer and
        be no older (``issued_at``) than the newest one imported before, which
        the state remembers: a stale list is refused with
        :class:`StaleRevocationListError`. When it revokes this license or
        device, the Guard locks for good, as after a ``REVOKED`` heartbeat;
        returns whether it did.
        """
        from modelseal.license.heartbeat import StaleRevocationListError, verify_revocations

        lic = self._license
        if lic is None or self._store is None:
            raise NotLicensedError(self._denied or "not_verified")
        text = os.fspath(source).strip()
        looks_like_token = text.count(".") == 2 and "/" not in text
        if looks_like_token and (len(text) > 255 or not Path(text).exists()):
            token = text
        else:
            try:
                token = Path(text).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise HeartbeatReplyError(
                    f"cannot read the revocation list {text}: {exc}"
                ) from None
        rl = verify_revocations(token, self._trust, issuer=lic.claims.iss)
        device_id = lic.claims.device.device_id if lic.claims.device else None
        revoked = rl.revokes(lic.claims.jti, device_id)
        with self._txn() as t:
            seen = t.state.revocations_iat
            if seen is not None and rl.issued_at < seen:
                raise StaleRevocationListError(
                    f"this revocation list (issued at {rl.issued_at}) is older than the one"
                    f" already imported (issued at {seen})"
                )
            t.state.revocations_iat = rl.issued_at
            if revoked:
                t.state.revoked = True
                t.log("revoked", reason="revoked", source="revocation_list", issued_at=rl.issued_at)
            else:
                t.log("revocations_imported", issued_at=rl.issued_at, revoked=False)
        if revoked:
            self._denied = "revoked"
        return revoked

    def _swap_license(self, token: str, current: License) -> None:
        """Adopt a renewed license from a verified reply, without a restart.

        It must verify like any license (trust, audience, this device) and be
        for the same license and device; it is then written over the license
        file, so a restart starts from it too.
        """
        try:
            renewed = verify_license(
                token,
                self._trust,
                audience=self._audience,
                issuer=current.claims.iss,
                now=self._clock(),
                leeway=self._leeway,
                fingerprint=self.fingerprint,
            )
        except LicenseError as exc:
            with contextlib.suppress(OSError, ModelsealError):
                self._log("renewal_refused", reason=exc.reason, detail=str(exc))
            return
        same_device = (renewed.claims.device and renewed.claims.device.device_id) == (
            current.claims.device and current.claims.device.device_id
        )
        if renewed.claims.jti != current.claims.jti or not same_device:
            return
        self._token = renewed.token
        if self._license_path is not None:
            tmp = self._license_path.with_name(self._license_path.name + ".renewed")
            with contextlib.suppress(OSError):
                tmp.write_text(renewed.token + "\n")
                tmp.replace(self._license_path)
        with self._lock:
            self._license = renewed
            self._schedule_recheck()
        self._log("renewed", license=renewed.claims.jti, exp=renewed.claims.exp)

    def unlock(self, code: str) -> datetime:
        """Apply a vendor-issued emergency unlock code; always audited. Returns its end.

        The code is checked against the hashes the license carries: nothing on
        this device can make a code (docs/guard-audit-unlock.md §2).
        """
        try:
            lic = self._verify_token(with_device=True)
            if self._store is None:
                self._store = self._open_store(lic)
        except LicenseError as exc:
            # refused as verify() refuses (typed, reason code only, audited):
            # a raw WrongDeviceError told the caller more than "not licensed"
            raise self._refuse_unverified(exc) from None
        try:
            until = self._apply_unlock(lic, code)
        except OSError as exc:
            raise self._storage_error(exc) from None
        # a full verification: dates, quota and features all apply again
        self.verify()
        return until

    def _apply_unlock(self, lic: License, code: str) -> datetime:
        from modelseal.guard.unlock import (
            UnlockCodeInvalidError,
            unlock_attempt_allowed,
            verify_unlock_code,
        )

        device_id = lic.claims.device.device_id if lic.claims.device else ""
        codes = lic.claims.unlock
        failure: ModelsealError | None = None
        with self._txn(create=self._first_run(lic.claims.jti)) as t:
            st = t.state
            t.expect_anchored_head()
            self._advance(st, self._clock())
            assert st.trusted is not None
            # every time here is the forward-only clock: setting the clock back
            # neither revives an expired code nor resets the rate limiter
            trusted = datetime.fromtimestamp(st.trusted, UTC)
            failures = [datetime.fromtimestamp(t, UTC) for t in st.unlock_failures]
            if not unlock_attempt_allowed(failures, trusted):
                failure = UnlockRateLimitedError("too many wrong unlock codes; try again later")
            else:
                try:
                    if codes is None:
                        raise UnlockCodeInvalidError("the license carries no unlock codes")
                    grant = verify_unlock_code(
                        code,
                        license_id=lic.claims.jti,
                        device_id=device_id,
                        verifiers=codes.verifiers,
                        grant_hours=codes.hours,
                        used_serials=st.unlock_serials,
                    )
                except ModelsealError as exc:
                    failure = exc
                    # keep the last day of failures: enough for the limiter's window
                    st.unlock_failures = [
                        t for t in st.unlock_failures if t > st.trusted - 86400
                    ] + [st.trusted]
                else:
                    st.unlock_serials.append(grant.serial)
                    # The window runs on the forward-only clock and lowers nothing:
                    # it lets the guard run with a clock behind its high-water mark
                    # (to fix a wrong clock), never past the license's expiry.
                    until = trusted + timedelta(hours=grant.grant_hours)
                    st.unlock_until = until.timestamp()
            # in the same transaction as the counters it changes: a failed write
            # neither spends the code nor forgets the failure without a trace
            if failure is not None:
                t.log("unlock_refused", reason="unlock_invalid", detail=str(failure))
            else:
                end = until.isoformat()
                t.log("unlock_used", reason="unlock_used", serial=grant.serial, until=end)
        if failure is not None:
            raise failure
        return until


@dataclass
class _Txn:
    """One state transaction's view: the state, and the audit records it anchors."""

    audit: Any
    state: GuardState = field(init=False)
    appended: list[dict[str, Any]] = field(default_factory=list)

    def _anchor(self) -> Any:
        from modelseal.guard.audit import Head

        head = self.state.audit_head
        return None if head is None else Head(int(str(head[0])), str(head[1]))

    def log(self, event: str, *, reason: str | None = None, **data: Any) -> dict[str, Any]:
        """Append a record after the anchored head and anchor it (written with the state)."""
        from modelseal.guard.audit import AuditFormatError, AuditTamperedError

        try:
            record: dict[str, Any] = self.audit.append(
                event, reason=reason, data=data or None, after=self._anchor()
            )
        except (AuditTamperedError, AuditFormatError) as exc:
            raise StateTamperedError(f"the audit log was modified: {exc}") from None
        self.appended.append(record)
        self.state.audit_head = [record["seq"], record["hash"]]
        return record

    def expect_anchored_head(self) -> None:
        """Cheap (tail-only) check that the log still ends at the anchor."""
        from modelseal.guard.audit import AuditFormatError, AuditTamperedError

        try:
            self.audit.expect_head(self._anchor())
        except (AuditTamperedError, AuditFormatError) as exc:
            raise StateTamperedError(f"the audit log was modified: {exc}") from None

    def take_back(self) -> None:
        """The state was not written: remove the records it would have anchored."""
        for record in reversed(self.appended):
            with contextlib.suppress(OSError, ModelsealError):
                self.audit.rollback(record)
        self.appended.clear()


_GUARDS: weakref.WeakSet[Guard] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for guard in list(_GUARDS):
        guard._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
