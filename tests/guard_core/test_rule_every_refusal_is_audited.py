"""Rule: every refusal is audited as a ``refused`` record carrying its reason
code and the error's message (``detail``), in the right log
(docs/guard-audit-unlock.md, the audit log):

* after the license verified on this device: in the license's own log,
  anchored in its state;
* before that, for a genuine license refused by date or environment on its
  bound device (also on its very first run): still in the license's own log,
  anchored, so deleting the record shows;
* otherwise (a forged or untrusted token, another device): in
  ``unverified.audit.jsonl``;
* refused features: at most one record a second per feature, each counting
  the refusals it summarises (``also_refused_since_last_record``);
* refusing never depends on the log being writable.

Found by mutation testing (tests/MUTATION.md, guard/core.py): the record's
event name, reason and detail, the log it goes to and the once-a-second
summary of ``Guard._refuse``, ``Guard._refuse_unverified`` and
``Guard._log_feature_refusal`` could each be changed without a failing test.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from modelseal.crypto import ContentKey, PrivateKey, generate_private_key
from modelseal.errors import ModelsealError
from modelseal.guard import NotLicensedError
from modelseal.guard.audit import format_ts, iter_records
from modelseal.guard.audit import verify as verify_audit
from tests.guard_core.test_guard import FakeClock, _guard, _license
from tests.license.conftest import NOW, make_device

Model = tuple[Path, ContentKey]


def _refused(path: Path) -> list[dict[str, Any]]:
    return [r for r in iter_records(path) if r["event"] == "refused"]


def _assert_detail(record: dict[str, Any]) -> None:
    assert set(record["data"]) == {"detail"}
    assert record["data"]["detail"] and record["data"]["detail"] != "None"


def test_a_refusal_after_verification_is_in_the_licenses_log(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    guard = _guard(vendor, _license(vendor, cek, max_calls=2), tmp_path, FakeClock(NOW))
    guard.check()
    guard.check()
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "over_quota"
    (record,) = _refused(guard.audit_path)
    assert record["reason"] == "over_quota"
    _assert_detail(record)
    assert verify_audit(guard.audit_path).ok
    # sticky: the next call is refused without another record
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "over_quota"
    assert len(_refused(guard.audit_path)) == 1


@pytest.mark.parametrize("first_run", [False, True])
def test_an_expired_genuine_license_is_refused_in_its_own_log(
    vendor: PrivateKey, model: Model, tmp_path: Path, first_run: bool
) -> None:
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek)
    if not first_run:
        _guard(vendor, token, tmp_path, clock).close()  # activated on this device
    else:  # an earlier, unrelated refusal: the unverified log is not this license's
        forged = _license(generate_private_key("ed25519"), cek)
        with pytest.raises(NotLicensedError):
            _guard(vendor, forged, tmp_path, clock)
    clock.now = NOW + timedelta(days=31)
    guard = _guard(vendor, token, tmp_path, clock, verify=False)
    with pytest.raises(NotLicensedError) as info:
        guard.verify()
    assert info.value.reason == "expired"
    own = tmp_path / "state" / f"{read_jti(token)}.audit.jsonl"
    (record,) = _refused(own)
    assert record["reason"] == "expired"
    _assert_detail(record)
    assert verify_audit(own).ok
    unverified = tmp_path / "state" / "unverified.audit.jsonl"
    seen = [r["reason"] for r in _refused(unverified)] if unverified.exists() else []
    assert seen == (["untrusted_key"] if first_run else [])


def read_jti(token: str) -> str:
    from modelseal.license import read_unverified

    return str(read_unverified(token)[1]["jti"])


@pytest.mark.parametrize("case", ["untrusted", "other_device"])
def test_a_refusal_with_no_state_to_anchor_in_goes_to_the_unverified_log(
    vendor: PrivateKey, model: Model, tmp_path: Path, case: str
) -> None:
    _, cek = model
    if case == "untrusted":
        token, trusted, device = _license(generate_private_key("ed25519"), cek), vendor, None
        reason = "untrusted_key"
    else:
        other = make_device({"disk.root_serial": "NEWDISK", "net.mac": "52:54:00:ff:ff:ff"})
        token, trusted, device, reason = _license(vendor, cek), vendor, other, "wrong_device"
    kw: dict[str, Any] = {"verify": False}
    if device is not None:
        kw["device"] = device
    guard = _guard(trusted, token, tmp_path, FakeClock(NOW), **kw)
    with pytest.raises(NotLicensedError) as info:
        guard.verify()
    assert info.value.reason == reason
    (record,) = _refused(tmp_path / "state" / "unverified.audit.jsonl")
    assert record["reason"] == reason
    _assert_detail(record)
    assert not (tmp_path / "state" / f"{read_jti(token)}.audit.jsonl").exists()


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), ModelsealError("x")])
def test_refusing_does_not_depend_on_the_log(
    vendor: PrivateKey,
    model: Model,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
) -> None:
    _, cek = model

    def broken(*args: Any, **kwargs: Any) -> None:
        raise error

    guard = _guard(vendor, _license(vendor, cek, max_calls=1), tmp_path, FakeClock(NOW))
    guard.check()
    monkeypatch.setattr(guard, "_log", broken)
    for feature, reason in (("hd", "feature_missing"), (None, "over_quota")):
        with pytest.raises(NotLicensedError) as info:
            guard.check(feature)
        assert info.value.reason == reason
    # before verification: the unverified log cannot be written either
    forged = _license(generate_private_key("ed25519"), cek)
    guard = _guard(vendor, forged, tmp_path / "b", FakeClock(NOW), verify=False)
    monkeypatch.setattr(guard, "_audit_log", broken)
    with pytest.raises(NotLicensedError) as info:
        guard.verify()
    assert info.value.reason == "untrusted_key"


class Monotonic:
    """A controllable ``time.monotonic`` (starting at the real one, so nothing is due)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


def test_feature_refusals_are_summarised_once_a_second_per_feature(
    vendor: PrivateKey, model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cek = model
    guard = _guard(vendor, _license(vendor, cek), tmp_path, FakeClock(NOW))
    mono = Monotonic()
    start = mono.now
    monkeypatch.setattr(time, "monotonic", mono)

    def refuse(feature: str, at: float, times: int = 1) -> None:
        mono.now = start + at
        for _ in range(times):
            with pytest.raises(NotLicensedError) as info:
                guard.check(feature)
            assert info.value.reason == "feature_missing"

    refuse("hd", 0.0)  # recorded at once
    refuse("hd", 0.5, times=3)  # within the second: counted
    refuse("hd", 0.999)
    refuse("vision", 0.999)  # another feature: its own first record
    refuse("hd", 1.0)  # a second after the last record: recorded with the count
    refuse("hd", 1.5)
    refuse("hd", 2.0)
    records = [(r["reason"], r["data"]) for r in _refused(guard.audit_path)]
    assert records == [
        ("feature_missing", {"feature": "hd", "also_refused_since_last_record": 0}),
        ("feature_missing", {"feature": "vision", "also_refused_since_last_record": 0}),
        ("feature_missing", {"feature": "hd", "also_refused_since_last_record": 4}),
        ("feature_missing", {"feature": "hd", "also_refused_since_last_record": 1}),
    ]


def test_a_deleted_state_is_refused_in_the_log_unanchored(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    """A refusal for tampering (here: the state file deleted) is appended to the
    license's own log, but not anchored: there is no trusted state to anchor in."""
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek)
    guard = _guard(vendor, token, tmp_path, clock)
    guard.close()
    (tmp_path / "state" / f"{read_jti(token)}.state").unlink()
    restarted = _guard(vendor, token, tmp_path, clock, verify=False)
    with pytest.raises(NotLicensedError) as info:
        restarted.verify()
    assert info.value.reason == "state_tampered"
    last = list(iter_records(guard.audit_path))[-1]
    assert (last["event"], last["reason"]) == ("refused", "state_tampered")
    _assert_detail(last)
    assert not (tmp_path / "state" / "unverified.audit.jsonl").exists()
    # and a restart is still refused: the record did not make a new state
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock)
    assert info.value.reason == "state_tampered"


def test_the_first_feature_refusal_is_recorded_even_just_after_boot(
    vendor: PrivateKey, model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule: a feature's first refusal is always recorded; only refusals within a
    second of that feature's last *record* are summarised. ``time.monotonic``
    counts from boot on Linux, so a default "last record at 0.0" hid the first
    refusal of a service started within a second of boot (a container, a
    fresh VM)."""
    _, cek = model
    guard = _guard(vendor, _license(vendor, cek), tmp_path, FakeClock(NOW))
    mono = Monotonic()
    mono.now = 0.5  # half a second after boot; the recheck is not due (far in the "future")
    monkeypatch.setattr(time, "monotonic", mono)
    guard._recheck_at = 30.0
    with pytest.raises(NotLicensedError) as info:
        guard.check("hd")
    assert info.value.reason == "feature_missing"
    records = [(r["reason"], r["data"]) for r in _refused(guard.audit_path)]
    assert records == [("feature_missing", {"feature": "hd", "also_refused_since_last_record": 0})]


def _edit_last_record(path: Path) -> bytes:
    """Change the last record's data without re-hashing it; return the log's bytes."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[-1] = lines[-1].replace(b'"event":"', b'"event":"x', 1)
    path.write_bytes(b"".join(lines))
    return path.read_bytes()


@pytest.mark.parametrize("tamper", ["edited_last_record", "garbage_line"])
def test_a_refusal_for_a_tampered_log_is_recorded_beside_it(
    vendor: PrivateKey, model: Model, tmp_path: Path, tamper: str
) -> None:
    """Rule (docs/guard-audit-unlock.md, "Refusals the license's log cannot take"):
    when the license's own log was tampered so that it cannot be extended (its
    last record no longer verifies, or is not a record), the ``state_tampered``
    refusal is still raised with its reason, and recorded, unanchored, in
    ``unverified.audit.jsonl`` naming the license and what is wrong with its log;
    the tampered log is left exactly as found (it is the evidence). Before, the
    append failed and the refusal was recorded nowhere."""
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek)
    guard = _guard(vendor, token, tmp_path, clock)
    guard.close()
    own = guard.audit_path
    if tamper == "edited_last_record":
        evidence = _edit_last_record(own)
    else:
        with own.open("ab") as f:
            f.write(b"not a record\n")
        evidence = own.read_bytes()
    restarted = _guard(vendor, token, tmp_path, clock, verify=False)
    with pytest.raises(NotLicensedError) as info:
        restarted.verify()
    assert info.value.reason == "state_tampered"
    assert own.read_bytes() == evidence
    unverified = tmp_path / "state" / "unverified.audit.jsonl"
    (record,) = _refused(unverified)
    assert record["reason"] == "state_tampered"
    assert set(record["data"]) == {"detail", "license", "audit_log_tampered"}
    assert record["data"]["license"] == read_jti(token)
    assert record["data"]["detail"].startswith("the audit log was modified")
    assert record["data"]["audit_log_tampered"] not in ("", "None")
    assert record["ts"] == format_ts(NOW)  # the Guard's clock, as for every record
    assert verify_audit(unverified).ok
    # still refused on the next start, and recorded again
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock)
    assert info.value.reason == "state_tampered"
    assert len(_refused(unverified)) == 2
    assert own.read_bytes() == evidence


def test_a_refusal_that_finds_the_log_tampered_keeps_its_reason_and_records_both(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    """Rule: a refusal that is not about tampering (here: a model this license
    does not cover), whose record cannot be appended because the log was
    tampered while the Guard ran, is still raised with its own reason, and is
    recorded in ``unverified.audit.jsonl`` with the tamper it found; the next
    call's recheck then refuses the license as ``state_tampered``."""
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek)
    guard = _guard(vendor, token, tmp_path, clock)
    evidence = _edit_last_record(guard.audit_path)
    with pytest.raises(NotLicensedError) as info:
        guard.content_key("another-key-id")
    assert info.value.reason == "key_unavailable"
    unverified = tmp_path / "state" / "unverified.audit.jsonl"
    (record,) = _refused(unverified)
    assert record["reason"] == "key_unavailable"
    assert set(record["data"]) == {"detail", "license", "audit_log_tampered"}
    assert record["data"]["license"] == read_jti(token)
    assert "modified" in record["data"]["audit_log_tampered"]
    assert guard.audit_path.read_bytes() == evidence
    guard._recheck_at = 0.0
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "state_tampered"
    assert [r["reason"] for r in _refused(unverified)] == ["key_unavailable", "state_tampered"]


def test_the_genuine_check_uses_the_licenses_own_dates_not_the_wall_clock(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    """Rule: "genuine" (signature, issuer, audience) is checked at the license's
    ``nbf``, never at the machine's wall clock: a license of 2031, expired on the
    Guard's clock, is still refused in its own log while the real date is 2026."""
    _, cek = model
    era = NOW + timedelta(days=5 * 365)
    clock = FakeClock(era)
    token = _license(vendor, cek, now=era)
    _guard(vendor, token, tmp_path, clock).close()
    clock.now = era + timedelta(days=31)
    guard = _guard(vendor, token, tmp_path, clock, verify=False)
    with pytest.raises(NotLicensedError) as info:
        guard.verify()
    assert info.value.reason == "expired"
    (record,) = _refused(tmp_path / "state" / f"{read_jti(token)}.audit.jsonl")
    assert record["reason"] == "expired"
    assert not (tmp_path / "state" / "unverified.audit.jsonl").exists()


def test_an_expired_license_for_another_product_is_not_genuine_here(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    """Rule: a license for another product (audience) or from another issuer is not
    this service's, even on its bound device: its refusal goes to the unverified log
    and no state is created for it."""
    _, cek = model
    clock = FakeClock(NOW + timedelta(days=31))
    for kw, label in (({"audience": ["acme/other"]}, "aud"), ({"issuer": "evil"}, "iss")):
        token = _license(vendor, cek, **kw)
        guard = _guard(vendor, token, tmp_path / label, clock, verify=False, issuer="acme")
        with pytest.raises(NotLicensedError):
            guard.verify()
        state = tmp_path / label / "state"
        assert not (state / f"{read_jti(token)}.audit.jsonl").exists()
        assert not list(state.glob("*.state"))
        assert len(_refused(state / "unverified.audit.jsonl")) == 1


def test_a_refusal_before_verification_survives_a_tampered_unverified_log(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    """Rule: refusing never depends on the log, also when the log that cannot take
    the record is ``unverified.audit.jsonl`` itself (nothing else to record it in)."""
    _, cek = model
    forged = _license(generate_private_key("ed25519"), cek)
    state = tmp_path / "state"
    state.mkdir()
    (state / "unverified.audit.jsonl").write_bytes(b"not a record\n")
    guard = _guard(vendor, forged, tmp_path, FakeClock(NOW), verify=False)
    with pytest.raises(NotLicensedError) as info:
        guard.verify()
    assert info.value.reason == "untrusted_key"
    assert (state / "unverified.audit.jsonl").read_bytes() == b"not a record\n"
