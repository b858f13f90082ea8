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
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from modelseal.crypto import ContentKey, PublicKey, hkdf_sha256
from modelseal.device import DeviceFingerprint, FingerprintSource, collect
from modelseal.errors import IntegrityError, ModelsealError
from modelseal.guard.clock import ClockState, Verdict, observe, offline_grace_ok
from modelseal.guard.state import GuardState, StateStore
from modelseal.license import (
    ClockRollbackError,
    License,
    LicenseError,
    LicenseExpiredError,
    LicenseRevokedError,
    OfflineGraceExceededError,
    QuotaExceededError,
    StateTamperedError,
    TrustedKey,
    TrustStore,
    WrongAudienceError,
    verify_license,
)
from modelseal.license.keydelivery import state_key, unwrap_content_key, unwrap_unlock_secret
from modelseal.license.verify import license_kek

Clock = Callable[[], datetime]


class UnlockRateLimitedError(LicenseError):
    """Too many wrong unlock codes in the last hour (online guessing defence)."""

    reason = "unlock_rate_limited"
    exit_code = 17


class NotLicensedError(LicenseError):
    """What callers of a guarded model see. ``reason`` is the audit reason code."""

    def __init__(self, reason: str) -> None:
        super().__init__("not licensed", reason=reason)


@dataclass(frozen=True)
class HeartbeatReport:
    license_id: str
    device_id: str | None
    calls_reserved: int
    time: float
    audit_head: list[object] | None


@dataclass(frozen=True)
class HeartbeatReply:
    ok: bool
    revoked: bool = False
    message: str = ""


class HeartbeatClient(Protocol):
    """Reports to the control plane; the HTTP client arrives with the control plane."""

    def send(self, report: HeartbeatReport) -> HeartbeatReply: ...


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
        audience: str | Sequence[str] | None = None,
        issuer: str | None = None,
        clock: Clock = _utcnow,
        leeway: timedelta = timedelta(seconds=60),
        rollback_tolerance: timedelta = timedelta(minutes=5),
        recheck_every: timedelta = timedelta(seconds=30),
        reserve_calls: int = 64,
        heartbeat: HeartbeatClient | None = None,
        verify: bool = True,
    ) -> None:
        self._token = _read_token(license)
        self._trust = _trust(trust)
        self._state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self._source = source
        self._audience = audience
        self._issuer = issuer
        self._clock = clock
        self._leeway = leeway
        self._tolerance = rollback_tolerance
        self._recheck_every = recheck_every.total_seconds()
        self._reserve_calls = max(1, reserve_calls)
        self._heartbeat = heartbeat
        self._lock = threading.Lock()
        self._fingerprint: DeviceFingerprint | None = None
        self._license: License | None = None
        self._store: StateStore | None = None
        self._audit: Any = None
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
        if verify:
            self.verify()

    @classmethod
    def from_env(cls, **kwargs: Any) -> Guard:
        """``MODELSEAL_LICENSE``, ``MODELSEAL_TRUST`` (``:``-separated ``[ISSUER=]PATH``
        entries, docs/license.md), ``MODELSEAL_STATE_DIR``."""
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
        name = self._license.claims.jti if self._license else "unverified"
        return self._state_dir / f"{name}.audit.jsonl"

    # --- audit --------------------------------------------------------------------

    def _log(self, event: str, *, reason: str | None = None, **data: Any) -> None:
        """Append to the audit log and anchor its new head in the state file.

        Anchoring after every append means the log may run past the anchor by
        at most one record (a crash between the two writes): a cut log, or an
        older state file put back beside a newer log, shows at the next start.
        """
        record = self._append_audit(event, reason=reason, **data)
        if self._store is not None and self._license is not None and self._store.exists():
            with self._store.transaction(create=False) as st:
                st.audit_head = [record["seq"], record["hash"]]

    def _append_audit(self, event: str, *, reason: str | None = None, **data: Any) -> Any:
        from modelseal.guard.audit import AuditLog

        if self._audit is None or Path(self._audit.path) != self.audit_path:
            self._state_dir.mkdir(parents=True, exist_ok=True)
            self._audit = AuditLog(self.audit_path, clock=self._clock)
        return self._audit.append(event, reason=reason, data=data or None)

    def _refuse(self, error: LicenseError) -> NotLicensedError:
        self._denied = error.reason
        # refusing must not depend on the log being writable
        with contextlib.suppress(OSError, ModelsealError):
            self._log("refused", reason=error.reason, detail=str(error))
        return NotLicensedError(error.reason)

    # --- verification -------------------------------------------------------------

    def _verify_token(self, *, with_device: bool) -> License:
        """Signature, claims, dates (and the device binding); remembers the license."""
        lic = verify_license(
            self._token,
            self._trust,
            audience=self._audience,
            issuer=self._issuer,
            now=self._clock(),
            leeway=self._leeway,
            fingerprint=self.fingerprint if with_device else None,
        )
        self._license = lic
        return lic

    def verify(self) -> License:
        """Full verification; raises :class:`NotLicensedError` with the reason code."""
        with self._lock:
            try:
                lic = self._verify_token(with_device=True)
                self._store = StateStore(
                    self._state_dir / f"{lic.claims.jti}.state",
                    self._state_key(lic),
                    lic.claims.jti,
                )
                self._check_state(first=True)
            except LicenseError as exc:
                raise self._refuse(exc) from None
            except (OSError, ModelsealError) as exc:
                # an unreadable state directory, a damaged audit log...: refuse, typed
                raise self._refuse(StateTamperedError(f"guard state: {exc}")) from None
            try:
                self._log("verified", license=lic.claims.jti, customer=lic.claims.sub)
            except (OSError, IntegrityError) as exc:
                # the audit log's last record was edited: the chain cannot be extended
                raise self._refuse(StateTamperedError(f"audit log: {exc}")) from None
            self._features = frozenset(lic.claims.entitlements)
            self._calls_limited = lic.claims.limits.calls is not None
            self._denied = None
            self._schedule_recheck()
            return lic

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

    def _check_state(self, *, first: bool = False) -> None:
        lic = self.license
        store = self._store
        assert store is not None
        audit_exists = self.audit_path.exists() and self.audit_path.stat().st_size > 0
        with store.transaction(create=not audit_exists) as st:
            if first:
                self._check_audit_anchor(st)
            trusted = self._check_clock(st, self._clock())
            if st.revoked:
                raise LicenseRevokedError("the license was revoked")
            if lic.claims.exp is not None and trusted - self._leeway.total_seconds() >= (
                lic.claims.exp
            ):
                # the wall clock may say otherwise; the forward-only clock does not
                raise LicenseExpiredError("the license has expired")
            limit = lic.claims.limits.calls
            if limit is not None and st.calls_reserved >= limit and first:
                raise QuotaExceededError(f"all {limit} licensed calls are used")
            self._check_grace(st)

    def _check_audit_anchor(self, st: GuardState) -> None:
        """The state remembers the log's last record: a cut, edited or swapped log shows."""
        from modelseal.guard.audit import verify as verify_audit

        if st.audit_head is None:
            return
        seq, digest = int(str(st.audit_head[0])), str(st.audit_head[1])
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
                self._check_state()
            except LicenseError as exc:
                raise self._refuse(exc) from None
            self._schedule_recheck()

    # --- the per-call path --------------------------------------------------------

    def check(self, feature: str | None = None) -> None:
        """Raise :class:`NotLicensedError` unless this call is licensed (and count it)."""
        if self._denied is not None:
            raise NotLicensedError(self._denied)
        if time.monotonic() >= self._recheck_at:
            self._recheck()
        if feature is not None and feature not in self._features:
            self._log_feature_refusal(feature)
            raise NotLicensedError("feature_missing")
        if self._calls_limited:
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
        last, suppressed = self._feature_refusals.get(feature, (0.0, 0))
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

    async def acheck(self, feature: str | None = None) -> None:
        """``check`` for async code: the rare slow path runs in a worker thread."""
        if (
            self._denied is None
            and time.monotonic() < self._recheck_at
            and (feature is None or feature in self._features)
            and (not self._calls_limited or self._reserved_left > 0)
        ):
            self.check(feature)
            return
        await asyncio.to_thread(self.check, feature)

    def _reserve(self) -> None:
        lic = self.license
        limit = lic.claims.limits.calls
        assert limit is not None
        assert self._store is not None
        try:
            with self._store.transaction(create=False) as st:
                self._check_clock(st, self._clock())
                remaining = limit - st.calls_reserved
                if remaining <= 0:
                    raise QuotaExceededError(f"all {limit} licensed calls are used")
                take = min(self._reserve_calls, remaining)
                st.calls_reserved += take
                # Logged and anchored in the same transaction: a saved copy of an
                # older state file no longer matches the log's head (replay).
                record = self._append_audit("reserved", calls=take, total=st.calls_reserved)
                st.audit_head = [record["seq"], record["hash"]]
        except LicenseError as exc:
            raise self._refuse(exc) from None
        self._reserved_left = take
        if not self._registered_exit:
            atexit.register(self.close)
            self._registered_exit = True

    def close(self) -> None:
        """Give back this process's unused reserved calls."""
        with self._lock:
            left, self._reserved_left = self._reserved_left, 0
            if left <= 0 or self._store is None:
                return
            try:
                with self._store.transaction(create=False) as st:
                    st.calls_reserved = max(0, st.calls_reserved - left)
            except (OSError, ModelsealError):
                pass

    def usage(self) -> int:
        """Calls used so far on this device (reserved by all processes, minus ours unused)."""
        assert self._store is not None
        st = self._store.read()
        if st is None:
            raise StateTamperedError("the guard state file was deleted")
        return st.calls_reserved - self._reserved_left

    # --- keys and models ----------------------------------------------------------

    def content_key(self, key_id: str) -> ContentKey:
        self.check()
        if key_id not in self._keys:
            try:
                lic = self.license
                assert lic.claims.keys is not None
                self._keys[key_id] = unwrap_content_key(
                    lic.claims.keys, self._license_kek(lic), jti=lic.claims.jti, key_id=key_id
                )
            except LicenseError as exc:
                raise self._refuse(exc) from None
        return self._keys[key_id]

    def load(
        self, path: str | os.PathLike[str], framework: str | None = None, **kwargs: Any
    ) -> Any:
        """Check the license, open the model's key on this device, load from memory."""
        from modelseal import api
        from modelseal.sealed import read_header

        header = read_header(path)
        if header.model_id is not None and header.model_id not in self.license.claims.aud:
            raise self._refuse(WrongAudienceError(f"model {header.model_id!r} is not licensed"))
        key = self.content_key(header.key_id)
        with api.SealedModel(path, key) as model:
            return model.load(framework, **kwargs)

    # --- heartbeats, revocation and emergency unlock ------------------------------

    def heartbeat_now(self) -> HeartbeatReply:
        """Report to the control plane; a success resets the offline-grace clock."""
        if self._heartbeat is None:
            raise NotLicensedError("no_heartbeat_client")
        lic = self.license
        assert self._store is not None
        current = self._store.read()
        report = HeartbeatReport(
            license_id=lic.claims.jti,
            device_id=lic.claims.device.device_id if lic.claims.device else None,
            calls_reserved=current.calls_reserved if current else 0,
            time=self._clock().timestamp(),
            audit_head=current.audit_head if current else None,
        )
        reply = self._heartbeat.send(report)
        with self._store.transaction(create=False) as st:
            now = self._clock()
            self._advance(st, now)
            st.high_water = max(st.high_water or 0.0, now.timestamp())
            if reply.revoked:
                st.revoked = True
            elif reply.ok:
                # on the forward-only clock: a clock set ahead for one heartbeat
                # and back afterwards buys no grace
                st.last_heartbeat_ok = st.trusted
        if reply.revoked:
            self._denied = "revoked"
            self._log("revoked", reason="revoked", message=reply.message)
        else:
            self._log("heartbeat", ok=reply.ok)
        return reply

    def unlock(self, code: str) -> datetime:
        """Apply a vendor-issued emergency unlock code; always audited. Returns its end."""
        from modelseal.guard.unlock import unlock_attempt_allowed, verify_unlock_code

        lic = verify_license(
            self._token,
            self._trust,
            now=self._clock(),
            leeway=self._leeway,
            fingerprint=self.fingerprint,
        )
        self._license = lic
        if self._store is None:
            self._store = StateStore(
                self._state_dir / f"{lic.claims.jti}.state", self._state_key(lic), lic.claims.jti
            )
        assert lic.claims.keys is not None
        secret = unwrap_unlock_secret(lic.claims.keys, self._license_kek(lic), jti=lic.claims.jti)
        device_id = lic.claims.device.device_id if lic.claims.device else ""
        failure: ModelsealError | None = None
        with self._store.transaction(create=not self.audit_path.exists()) as st:
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
                    grant = verify_unlock_code(
                        secret,
                        code,
                        license_id=lic.claims.jti,
                        device_id=device_id,
                        now=trusted,
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
        if failure is not None:
            self._log("unlock_refused", reason="unlock_invalid", detail=str(failure))
            raise failure
        self._log("unlock_used", reason="unlock_used", serial=grant.serial, until=until.isoformat())
        # a full verification: dates, quota and features all apply again
        self.verify()
        return until
