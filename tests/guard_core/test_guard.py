"""The Guard end to end, with an injected device and an injected clock."""

from __future__ import annotations

import json
import multiprocessing
import threading
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import modelseal
from modelseal.crypto import ContentKey, PrivateKey, generate_private_key
from modelseal.device import make_request
from modelseal.guard import Guard, NotLicensedError
from modelseal.guard.audit import iter_records
from modelseal.guard.audit import verify as verify_audit
from modelseal.guard.core import HeartbeatReply, HeartbeatReport
from modelseal.guard.unlock import issue_unlock_code
from modelseal.license import TrustStore, issue_license
from modelseal.license.verify import read_unverified
from tests.license.conftest import NOW, make_device


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def vendor() -> PrivateKey:
    return generate_private_key("ed25519")


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, ContentKey]:
    save_file({"w": np.arange(12, dtype=np.float32)}, str(tmp_path / "m.safetensors"))
    key = modelseal.seal(tmp_path / "m.safetensors", tmp_path / "m.mseal", model_id="acme/ocr")
    (tmp_path / "m.safetensors").unlink()
    return tmp_path / "m.mseal", key


def _license(vendor: PrivateKey, cek: ContentKey, **kw: object) -> str:
    args: dict[str, object] = dict(
        signing_key=vendor,
        issuer="acme",
        customer="ACME",
        audience=["acme/ocr"],
        request=make_request(make_device(), label="box"),
        content_keys=[(cek, "acme/ocr")],
        now=NOW,
        valid_for=timedelta(days=30),
        features=["ocr"],
        threshold=6,
    )
    args.update(kw)
    issued = issue_license(**args)  # type: ignore[arg-type]
    if issued.unlock_seed is not None:
        _SEEDS[issued.claims.jti] = issued.unlock_seed
    return issued.token


#: The vendor's unlock seeds of the licenses issued in these tests, by license id.
_SEEDS: dict[str, bytes] = {}


def _guard(vendor: PrivateKey, token: str, tmp_path: Path, clock: FakeClock, **kw: object) -> Guard:
    args: dict[str, object] = dict(
        state_dir=tmp_path / "state", source=None, clock=clock, audience="acme/ocr"
    )
    args.update(kw)
    src = kw.get("device", make_device())
    args.pop("device", None)
    from modelseal.device import StaticSource

    fp = src
    args["source"] = StaticSource(list(fp.components), fp.environment)  # type: ignore[attr-defined]
    return Guard(token, TrustStore([vendor.public_key()]), **args)  # type: ignore[arg-type]


def _reasons(guard: Guard) -> list[str | None]:
    return [r["reason"] for r in iter_records(guard.audit_path) if r["event"] == "refused"]


def test_load_with_license_checks_and_features(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, cek = model
    clock = FakeClock(NOW)
    guard = _guard(vendor, _license(vendor, cek), tmp_path, clock)
    arrays = guard.load(path, framework="numpy")
    np.testing.assert_array_equal(arrays["w"], np.arange(12, dtype=np.float32))
    guard.check()
    guard.check("ocr")
    with pytest.raises(NotLicensedError) as info:
        guard.check("hd")
    assert str(info.value) == "not licensed" and info.value.reason == "feature_missing"
    assert _reasons(guard) == ["feature_missing"]
    assert verify_audit(guard.audit_path).ok


def test_modelseal_load_with_license_and_trust(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from modelseal.device import StaticSource

    path, cek = model
    (tmp_path / "license.jwt").write_text(_license(vendor, cek, now=datetime.now(NOW.tzinfo)))
    vendor.public_key().save(tmp_path / "vendor.pub")
    dev = make_device()
    arrays = modelseal.load(
        path,
        license=tmp_path / "license.jwt",
        trust=tmp_path / "vendor.pub",
        framework="numpy",
        state_dir=tmp_path / "s",
        source=StaticSource(list(dev.components), dev.environment),
    )
    assert arrays["w"].shape == (12,)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("expired", "expired"),
        ("not_yet_valid", "not_yet_valid"),
        ("wrong_device", "wrong_device"),
        ("vm", "environment_refused"),
    ],
)
def test_refusals_have_reason_codes_and_a_generic_message(
    vendor,
    model,
    tmp_path,
    case,
    reason,  # type: ignore[no-untyped-def]
) -> None:
    _, cek = model
    clock = FakeClock(NOW)
    kw: dict[str, object] = {}
    token = _license(vendor, cek, allow_vm=False)
    if case == "expired":
        clock.now = NOW + timedelta(days=31)
    elif case == "not_yet_valid":
        clock.now = NOW - timedelta(days=1)
    elif case == "wrong_device":
        kw["device"] = make_device({"dmi.product_uuid": "x", "disk.root_serial": "y"})
    elif case == "vm":
        kw["device"] = make_device(virtualization="vm")
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock, **kw)
    assert str(info.value) == "not licensed"
    assert info.value.reason == reason
    if case == "wrong_device":
        # no state of this license opens here: nothing to anchor in
        records = list(iter_records(tmp_path / "state" / "unverified.audit.jsonl"))
    else:
        # a genuine license on its bound device: the refusal is in its own,
        # anchored log (deleting it locks the license, see the item 6 tests)
        jti = read_unverified(token)[1]["jti"]
        records = list(iter_records(tmp_path / "state" / f"{jti}.audit.jsonl"))
        assert not (tmp_path / "state" / "unverified.audit.jsonl").exists()
    assert records[-1]["reason"] == reason


def test_call_quota_survives_restarts(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek, max_calls=25)
    g1 = _guard(vendor, token, tmp_path, clock, reserve_calls=4)
    for _ in range(10):
        g1.check()
    g1.close()  # returns unused reservations
    g2 = _guard(vendor, token, tmp_path, clock, reserve_calls=4)
    assert g2.usage() == 10
    for _ in range(15):
        g2.check()
    with pytest.raises(NotLicensedError) as info:
        g2.check()
    assert info.value.reason == "over_quota"
    g2.close()
    with pytest.raises(NotLicensedError):
        _guard(vendor, token, tmp_path, clock)


def test_quota_is_exact_across_threads(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cek = model
    guard = _guard(
        vendor, _license(vendor, cek, max_calls=500), tmp_path, FakeClock(NOW), reserve_calls=7
    )
    ok = []

    def worker() -> None:
        n = 0
        for _ in range(200):
            try:
                guard.check()
                n += 1
            except NotLicensedError:
                pass
        ok.append(n)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(ok) == 500


def _child(args: tuple[str, str, str, int]) -> int:
    token, pub_pem, state_dir, calls = args
    from modelseal.crypto import load_public_key
    from modelseal.device import StaticSource

    dev = make_device()
    try:
        guard = Guard(
            token,
            TrustStore([load_public_key(pub_pem.encode())]),
            state_dir=state_dir,
            source=StaticSource(list(dev.components), dev.environment),
            clock=lambda: NOW,
            audience="acme/ocr",
            reserve_calls=5,
        )
    except NotLicensedError as exc:
        # a late starter may find the quota already used up by the others
        if exc.reason != "over_quota":
            raise
        return 0
    done = 0
    for _ in range(calls):
        try:
            guard.check()
            done += 1
        except NotLicensedError:
            break
    guard.close()
    return done


def test_quota_is_exact_across_processes(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cek = model
    token = _license(vendor, cek, max_calls=120)
    pub = vendor.public_key().to_pem().decode()
    _guard(vendor, token, tmp_path, FakeClock(NOW)).close()  # first activation
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        done = pool.map(_child, [(token, pub, str(tmp_path / "state"), 60)] * 3)
    assert sum(done) == 120


def test_clock_rollback_locks_and_unlock_code_frees(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek)
    guard = _guard(vendor, token, tmp_path, clock, recheck_every=timedelta(0))
    clock.now = NOW + timedelta(days=3)
    guard.check()
    clock.now = NOW + timedelta(days=1)  # two days back
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "clock_rollback"
    with pytest.raises(NotLicensedError):
        _guard(vendor, token, tmp_path, clock)  # a restart does not reset it
    # the vendor issues an emergency code for this device
    # the vendor's clock is right (day 3): its code is valid for 4 hours from then
    code = _code(guard.license, serial=1)  # the license's codes grant 24 h
    guard.unlock(code)
    guard.check()  # runs with the clock still behind, inside the window
    clock.now = NOW + timedelta(days=1, hours=12)
    guard.check()
    # the window is measured on the forward-only clock: 25 h later it is spent,
    # and the clock (day 2, 1 am) is still behind the high-water mark (day 3)
    clock.now = NOW + timedelta(days=1, hours=25)
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "clock_rollback"
    with pytest.raises(modelseal.ModelsealError):
        guard.unlock(code)  # single use (and expired by now)
    events = [r["event"] for r in iter_records(guard.audit_path)]
    assert "unlock_used" in events and "unlock_refused" in events


def test_state_tampering_and_deletion_are_detected(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek, max_calls=50)
    guard = _guard(vendor, token, tmp_path, clock)
    guard.check()
    guard.close()
    state_file = tmp_path / "state" / f"{guard.license.claims.jti}.state"
    blob = bytearray(state_file.read_bytes())
    blob[-3] ^= 1
    state_file.write_bytes(bytes(blob))
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock)
    assert info.value.reason == "state_tampered"
    state_file.unlink()
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock)
    assert info.value.reason == "state_tampered"


def test_audit_log_truncation_is_detected(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek)
    guard = _guard(vendor, token, tmp_path, clock, recheck_every=timedelta(0))
    for feature in ("hd", "4k", "batch"):
        guard.check()
        with pytest.raises(NotLicensedError):
            guard.check(feature)
    guard.check()
    assert len(guard.audit_path.read_bytes().splitlines()) >= 4
    lines = guard.audit_path.read_bytes().splitlines(keepends=True)
    guard.audit_path.write_bytes(b"".join(lines[:2]))
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock)
    assert info.value.reason == "state_tampered"


class Plane:
    def __init__(self) -> None:
        self.revoke = False
        self.reports: list[HeartbeatReport] = []

    def send(self, report: HeartbeatReport) -> HeartbeatReply:
        self.reports.append(report)
        return HeartbeatReply(ok=not self.revoke, revoked=self.revoke)


def test_offline_grace_heartbeats_and_revocation(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek, grace=timedelta(hours=72), heartbeat_url="https://cp.example/hb")
    plane = Plane()
    guard = _guard(vendor, token, tmp_path, clock, heartbeat=plane, recheck_every=timedelta(0))
    clock.now = NOW + timedelta(hours=70)
    guard.check()
    clock.now = NOW + timedelta(hours=73)
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "offline_grace_exceeded"
    guard.heartbeat_now()
    guard.verify()
    guard.check()
    assert plane.reports[-1].license_id == guard.license.claims.jti
    plane.revoke = True
    guard.heartbeat_now()
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "revoked"
    with pytest.raises(NotLicensedError):
        _guard(vendor, token, tmp_path, clock)
    assert json.dumps(_reasons(guard)).count("revoked") >= 1


def test_an_edited_audit_record_refuses_the_license(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek)
    guard = _guard(vendor, token, tmp_path, clock)
    with pytest.raises(NotLicensedError):
        guard.check("hd")
    text = guard.audit_path.read_text().replace("feature_missing", "feature_granted")
    guard.audit_path.write_text(text)
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock)
    assert info.value.reason == "state_tampered"


def test_wrong_unlock_codes_are_rate_limited(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from modelseal.guard.core import UnlockRateLimitedError

    _, cek = model
    clock = FakeClock(NOW)
    guard = _guard(vendor, _license(vendor, cek), tmp_path, clock)
    lic = guard.license
    for serial in range(5):
        bad = _code(lic, serial=serial, seed=bytes(32))
        with pytest.raises(modelseal.IntegrityError):
            guard.unlock(bad)
    good = _code(lic, serial=7)
    with pytest.raises(UnlockRateLimitedError):
        guard.unlock(good)
    clock.now = NOW + timedelta(hours=2)
    guard.unlock(good)


def test_guard_from_env(vendor, model, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from modelseal.device import StaticSource

    _, cek = model
    (tmp_path / "license.jwt").write_text(_license(vendor, cek, now=datetime.now(NOW.tzinfo)))
    vendor.public_key().save(tmp_path / "vendor.pub")
    dev = make_device()
    source = StaticSource(list(dev.components), dev.environment)
    monkeypatch.delenv("MODELSEAL_LICENSE", raising=False)
    with pytest.raises(NotLicensedError) as info:
        Guard.from_env(source=source)
    assert info.value.reason == "not_configured"
    monkeypatch.setenv("MODELSEAL_LICENSE", str(tmp_path / "license.jwt"))
    monkeypatch.setenv("MODELSEAL_TRUST", str(tmp_path / "vendor.pub"))
    monkeypatch.setenv("MODELSEAL_STATE_DIR", str(tmp_path / "env-state"))
    guard = Guard.from_env(source=source, audience="acme/ocr")
    guard.check("ocr")
    assert guard.audit_path.parent == tmp_path / "env-state"


# --- regressions from the review -----------------------------------------------


def _code(lic, serial=1, seed=None):  # type: ignore[no-untyped-def]
    """The vendor's unlock code #serial for the test device (or from another seed)."""
    assert lic.claims.device is not None
    return issue_unlock_code(
        seed if seed is not None else _SEEDS[lic.claims.jti],
        license_id=lic.claims.jti,
        device_id=lic.claims.device.device_id,
        serial=serial,
    )


def test_an_unlock_never_extends_the_license(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cek = model
    clock = FakeClock(NOW + timedelta(days=29))
    token = _license(vendor, cek, unlock_hours=720)  # 30 days from NOW
    guard = _guard(vendor, token, tmp_path, clock, recheck_every=timedelta(0))
    clock.now = NOW + timedelta(days=1)  # back four weeks
    with pytest.raises(NotLicensedError):
        guard.check()
    guard.unlock(_code(guard.license))
    guard.check()
    clock.now = NOW + timedelta(days=2, hours=1)  # 25 h of forward movement: day 30 + 1 h
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "expired"
    # a code of one license is worthless for another on the same device
    guard2 = _guard(
        vendor, _license(vendor, cek, now=NOW), tmp_path / "b", FakeClock(NOW), verify=False
    )
    with pytest.raises(modelseal.IntegrityError):
        guard2.unlock(_code(guard.license, serial=2))


def test_restoring_an_old_state_file_is_detected(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek, max_calls=10)
    guard = _guard(vendor, token, tmp_path, clock, reserve_calls=1)
    state_file = tmp_path / "state" / f"{guard.license.claims.jti}.state"
    shutil.copy(state_file, tmp_path / "saved.state")
    for _ in range(10):
        guard.check()
    with pytest.raises(NotLicensedError):
        guard.check()
    guard.close()
    shutil.copy(tmp_path / "saved.state", state_file)
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock)
    assert info.value.reason == "state_tampered"


@pytest.mark.parametrize("replacement", [b"x", b"", b"{}\n"])
def test_a_replaced_audit_log_is_detected(vendor, model, tmp_path, replacement) -> None:  # type: ignore[no-untyped-def]
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek)
    guard = _guard(vendor, token, tmp_path, clock)
    with pytest.raises(NotLicensedError):
        guard.check("hd")
    guard.audit_path.write_bytes(replacement)
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock)
    assert info.value.reason == "state_tampered"


def test_a_heartbeat_with_the_clock_ahead_buys_no_grace(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek, grace=timedelta(days=1), heartbeat_url="https://cp.example/hb")
    guard = _guard(vendor, token, tmp_path, clock, heartbeat=Plane(), recheck_every=timedelta(0))
    clock.now = NOW + timedelta(days=25)
    guard.heartbeat_now()
    clock.now = NOW + timedelta(hours=1)  # back again
    with pytest.raises(NotLicensedError):
        _guard(vendor, token, tmp_path, clock)  # rollback: locked, not a free month


def test_an_unlock_does_not_lift_the_call_limit(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek, max_calls=3)
    guard = _guard(vendor, token, tmp_path, clock, reserve_calls=1)
    for _ in range(3):
        guard.check()
    guard.close()
    fresh = _guard(vendor, token, tmp_path, clock, verify=False)
    with pytest.raises(NotLicensedError) as info:
        fresh.unlock(_code(guard.license))
    assert info.value.reason == "over_quota"
    with pytest.raises(NotLicensedError):
        fresh.check()


def test_repeated_feature_refusals_are_summarised_not_fsynced_each(vendor, model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, cek = model
    guard = _guard(vendor, _license(vendor, cek), tmp_path, FakeClock(NOW))
    for _ in range(200):
        with pytest.raises(NotLicensedError):
            guard.check("hd")
    refused = [r for r in iter_records(guard.audit_path) if r["event"] == "refused"]
    assert 1 <= len(refused) <= 3
    assert refused[0]["data"]["feature"] == "hd"
