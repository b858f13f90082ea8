"""Rules for what reaches a running Guard from its vendor after it started
(docs/controlplane.md, heartbeats and revocation lists; docs/guard-audit-unlock.md):

* A renewed license from a verified heartbeat reply is adopted only if it
  verifies like any license *at the Guard's own clock and leeway*: trusted
  key, the Guard's audience, the current license's issuer, this device (its
  environment too), and only for the same license id and device id. A
  renewal that fails is audited (``renewal_refused`` with its reason), one
  that is adopted too (``renewed``, license id and new ``exp``), and the
  Guard keeps running when the license file or the audit log cannot be
  written.
* A signed revocation list (air-gapped sites) counts only when signed for
  the license's issuer; it revokes by license id or by (license id, device
  id), for good (a restart stays revoked), and every import is audited.
  The source is the token itself or a file; a missing file is reported as
  such, and a token is never mistaken for a file name (nor is a 256-byte
  token looked up as one: that is an ``OSError`` on Linux).
* A heartbeat reply counts only when signed for the license's issuer (a
  key the Guard trusts for another vendor is not enough), and a client that
  returns no signed reply is refused; each refusal is audited
  (``heartbeat_refused`` with the reason and detail). A reply never lowers
  the forward-only clock's high-water mark. An unbound license beats and
  imports lists without a device id or credential.
* Every verdict is audited (``heartbeat``: its code, and the lower-cased
  code as the reason when not ``VALID``); a locking verdict also as
  ``locked`` with the reason and the server's message. A report carries the
  state it reports (calls reserved, the anchored audit head, the time).
* An unlock code is refused on another device by the device check.
* Before a successful verification, a heartbeat or an import is refused
  with the reason the Guard is refusing for (``not_verified``, ``expired``
  ...), and a Guard without a heartbeat client says ``no_heartbeat_client``.

Found by mutation testing (tests/MUTATION.md, guard/core.py): each rule
above could be dropped from ``Guard._swap_license``,
``Guard.import_revocations`` or ``Guard.heartbeat_now`` without a failing test.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from modelseal.crypto import ContentKey, PrivateKey, generate_private_key
from modelseal.device import StaticSource, make_request
from modelseal.errors import ModelsealError
from modelseal.guard import Guard, NotLicensedError
from modelseal.guard.audit import iter_records
from modelseal.guard.core import HeartbeatReply, HeartbeatReport
from modelseal.license import TrustStore, jws, read_unverified
from modelseal.license.claims import LICENSE_TYP
from modelseal.license.heartbeat import (
    HeartbeatReplyError,
    HeartbeatVerdict,
    RevocationList,
    sign_reply,
    sign_revocations,
)
from tests.controlplane.test_guard_heartbeat import Clock, Server, _issue
from tests.license.conftest import NOW, make_device

FUTURE = datetime(2099, 1, 1, tzinfo=UTC)  # far past any wall clock this suite will see


@pytest.fixture(scope="module")
def vendor() -> PrivateKey:
    return generate_private_key("ed25519")


@pytest.fixture(scope="module")
def globex() -> PrivateKey:
    """Another vendor's key, trusted by the Guard too (unpinned): signs as "globex"."""
    return generate_private_key("ed25519")


def _guard(
    license: str | Path,
    trust: list[PrivateKey],
    tmp_path: Path,
    clock: Clock,
    server: Server | None = None,
    *,
    virtualization: str = "none",
    **kw: Any,
) -> Guard:
    fp = make_device(virtualization=virtualization)
    return Guard(
        license,
        TrustStore([k.public_key() for k in trust]),
        state_dir=tmp_path / "state",
        audience="acme/ocr",
        source=StaticSource(list(fp.components), fp.environment),
        clock=clock,
        heartbeat=server,
        recheck_every=timedelta(0),
        auto_heartbeat=False,  # the license names a URL; nothing listens there
        **kw,
    )


def _resign(key: PrivateKey, claims: dict[str, Any]) -> str:
    return jws.encode(claims, key, alg="EdDSA", headers={"typ": LICENSE_TYP, "kid": key.key_id})


def _records(guard: Guard, event: str) -> list[dict[str, Any]]:
    return [r for r in iter_records(guard.audit_path) if r["event"] == event]


# --- renewals -------------------------------------------------------------------


def _renewed_by(guard: Guard, server: Server, token: str) -> bool:
    """Offer ``token`` as a renewal in a valid reply; True when the Guard adopted it."""
    before = guard.license.token
    server.renewed = token
    assert guard.heartbeat_now().ok
    server.renewed = None
    return guard.license.token != before


def _refusals(guard: Guard) -> list[str | None]:
    return [r["reason"] for r in _records(guard, "renewal_refused")]


def test_an_adopted_renewal_is_audited_with_its_license_and_exp(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    token = _issue(vendor, ContentKey.generate())
    guard = _guard(token, [vendor], tmp_path, clock, server)
    claims = read_unverified(token)[1]
    claims["exp"] += 86400
    assert _renewed_by(guard, server, _resign(vendor, claims))
    (record,) = _records(guard, "renewed")
    assert record["data"] == {"license": claims["jti"], "exp": claims["exp"]}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"aud": ["acme/other"]}, "wrong_audience"),
        ({"nbf": int(NOW.timestamp()) + 30}, "not_yet_valid"),  # inside the default leeway
    ],
)
def test_a_renewal_is_verified_with_the_guards_audience_and_leeway(
    vendor: PrivateKey, tmp_path: Path, change: dict[str, Any], reason: str
) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    token = _issue(vendor, ContentKey.generate())
    guard = _guard(token, [vendor], tmp_path, clock, server, leeway=timedelta(0))
    claims = {**read_unverified(token)[1], **change}
    claims["exp"] += 86400
    assert not _renewed_by(guard, server, _resign(vendor, claims))
    assert _refusals(guard) == [reason]
    (record,) = _records(guard, "renewal_refused")
    assert record["data"]["detail"] and record["data"]["detail"] != "None"


def test_a_renewal_in_another_vendors_name_is_refused(
    vendor: PrivateKey, globex: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    token = _issue(vendor, ContentKey.generate())
    guard = _guard(token, [vendor, globex], tmp_path, clock, server)
    claims = read_unverified(token)[1]
    claims["iss"], claims["exp"] = "globex", claims["exp"] + 86400
    # a valid signature by a key the Guard trusts, for another issuer
    assert not _renewed_by(guard, server, _resign(globex, claims))
    assert _refusals(guard) == ["wrong_issuer"]


def test_a_renewal_is_verified_at_the_guards_clock(vendor: PrivateKey, tmp_path: Path) -> None:
    # everything happens in 2099 on the Guard's clock: the wall clock would refuse it
    clock = Clock(FUTURE)
    server = Server(vendor, clock)
    token = _issue(vendor, ContentKey.generate(), now=FUTURE)
    guard = _guard(token, [vendor], tmp_path, clock, server)
    claims = read_unverified(token)[1]
    claims["exp"] += 86400
    assert _renewed_by(guard, server, _resign(vendor, claims))


def test_a_renewal_must_fit_this_devices_environment(vendor: PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    vm = make_device(virtualization="vm")
    token = _issue(vendor, ContentKey.generate(), request=make_request(vm, label="box"))
    guard = _guard(token, [vendor], tmp_path, clock, server, virtualization="vm")
    claims = read_unverified(token)[1]
    claims["exp"] += 86400
    claims["device"]["allow_vm"] = False
    assert not _renewed_by(guard, server, _resign(vendor, claims))
    assert _refusals(guard) == ["environment_refused"]


def test_a_renewal_of_another_license_for_this_device_is_ignored(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    cek = ContentKey.generate()
    guard = _guard(_issue(vendor, cek), [vendor], tmp_path, clock, server)
    # the same device, another license id: verifies, but is not this license's renewal
    other = _issue(vendor, cek, license_id="lic_fedcba9876543210")
    assert not _renewed_by(guard, server, other)


def test_a_renewal_for_another_device_id_is_ignored(vendor: PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    token = _issue(vendor, ContentKey.generate())
    guard = _guard(token, [vendor], tmp_path, clock, server)
    claims = read_unverified(token)[1]
    claims["exp"] += 86400
    # the same components (so the device check passes), another device id
    claims["device"]["device_id"] = "dev_" + "0" * 16
    assert claims["device"]["device_id"] != guard.license.claims.device.device_id  # type: ignore[union-attr]
    assert not _renewed_by(guard, server, _resign(vendor, claims))


def test_a_renewal_is_adopted_when_the_license_file_cannot_be_rewritten(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    token = _issue(vendor, ContentKey.generate())
    (tmp_path / "lic").mkdir()
    (tmp_path / "lic" / "license.jwt").write_text(token)
    guard = _guard(tmp_path / "lic" / "license.jwt", [vendor], tmp_path, clock, server)
    shutil.rmtree(tmp_path / "lic")  # the write-back fails (even as root)
    claims = read_unverified(token)[1]
    claims["exp"] += 86400
    assert _renewed_by(guard, server, _resign(vendor, claims))
    assert guard.license.claims.exp == claims["exp"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), ModelsealError("x")])
def test_a_refused_renewal_does_not_depend_on_the_audit_log(
    vendor: PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    token = _issue(vendor, ContentKey.generate())
    guard = _guard(token, [vendor], tmp_path, clock, server)
    real_log = guard._log

    def log(event: str, **kw: Any) -> None:
        if event == "renewal_refused":
            raise error
        real_log(event, **kw)

    monkeypatch.setattr(guard, "_log", log)
    claims = {**read_unverified(token)[1], "aud": ["acme/other"]}
    assert not _renewed_by(guard, server, _resign(vendor, claims))  # the reply still counts
    guard.check()


# --- revocation lists -----------------------------------------------------------


def _crl(key: PrivateKey, issuer: str = "acme", **kw: Any) -> tuple[RevocationList, str]:
    args: dict[str, Any] = dict(
        issuer=issuer,
        issued_at=int(NOW.timestamp()) - 60,
        next_update=int(NOW.timestamp()) + 86400,
        licenses=frozenset(),
        devices=frozenset(),
    )
    args.update(kw)
    rl = RevocationList(**args)
    return rl, sign_revocations(rl, key)


def test_a_list_naming_this_device_revokes_it_for_good(vendor: PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOW)
    token = _issue(vendor, ContentKey.generate())
    guard = _guard(token, [vendor], tmp_path, clock)
    lic = guard.license
    assert lic.claims.device is not None
    rl, crl = _crl(vendor, devices=frozenset({(lic.license_id, lic.claims.device.device_id)}))
    assert guard.import_revocations(crl) is True
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "revoked"
    (record,) = _records(guard, "revoked")
    assert record["reason"] == "revoked"
    assert record["data"] == {"source": "revocation_list", "issued_at": rl.issued_at}
    # kept in the Guard's state: a restart stays revoked
    with pytest.raises(NotLicensedError) as info:
        _guard(token, [vendor], tmp_path, clock)
    assert info.value.reason == "revoked"


def test_a_list_naming_others_changes_nothing_and_is_audited(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    guard = _guard(_issue(vendor, ContentKey.generate()), [vendor], tmp_path, clock)
    device_id = guard.license.claims.device.device_id  # type: ignore[union-attr]
    rl, crl = _crl(
        vendor,
        licenses=frozenset({"lic_another"}),
        devices=frozenset({("lic_another", device_id)}),  # this device, another license
    )
    assert guard.import_revocations(crl) is False
    guard.check()
    (record,) = _records(guard, "revocations_imported")
    assert record["data"] == {"issued_at": rl.issued_at, "revoked": False}


def test_a_list_in_another_vendors_name_is_refused(
    vendor: PrivateKey, globex: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    guard = _guard(_issue(vendor, ContentKey.generate()), [vendor, globex], tmp_path, clock)
    _, crl = _crl(globex, issuer="globex", licenses=frozenset({guard.license.license_id}))
    with pytest.raises(HeartbeatReplyError):
        guard.import_revocations(crl)
    guard.check()


def test_a_list_is_read_from_a_file_or_taken_as_the_token(
    vendor: PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(NOW)
    guard = _guard(_issue(vendor, ContentKey.generate()), [vendor], tmp_path, clock)
    _, crl = _crl(vendor)
    monkeypatch.chdir(tmp_path)
    Path("crl.jwt").write_text(crl + "\n")
    assert guard.import_revocations("crl.jwt") is False  # a relative file name
    assert guard.import_revocations(tmp_path / "crl.jwt") is False
    # the longest file name there is (255 bytes), dotted like a token: still a file
    longest = "a" * 120 + "." + "b" * 120 + "." + "c" * 13
    assert len(longest) == 255
    Path(longest).write_text(crl)
    assert guard.import_revocations(longest) is False
    assert guard.import_revocations(crl) is False  # the token itself


@pytest.mark.parametrize("name", ["missing.jwt", "sub/a.b.c", "missing"])
def test_a_missing_list_file_is_named(
    vendor: PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    guard = _guard(_issue(vendor, ContentKey.generate()), [vendor], tmp_path, Clock(NOW))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HeartbeatReplyError) as info:
        guard.import_revocations(name)
    assert str(info.value).startswith(f"cannot read the revocation list {name}: ")


@pytest.mark.parametrize("token", ["a.b.c", "x" * 100 + "." + "y" * 100 + "." + "z" * 54])
def test_a_dotted_string_that_is_no_file_is_checked_as_a_token(
    vendor: PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    assert len(token) in (5, 256)  # 256 bytes: one more than the longest file name
    guard = _guard(_issue(vendor, ContentKey.generate()), [vendor], tmp_path, Clock(NOW))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HeartbeatReplyError) as info:
        guard.import_revocations(token)
    assert "cannot read" not in str(info.value)
    guard.check()


# --- before a verification ------------------------------------------------------


def test_heartbeats_and_lists_are_refused_with_the_guards_reason(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    token = _issue(vendor, ContentKey.generate())
    _, crl = _crl(vendor)
    guard = _guard(token, [vendor], tmp_path, clock, server, verify=False)
    for action in (guard.heartbeat_now, lambda: guard.import_revocations(crl)):
        with pytest.raises(NotLicensedError) as info:
            action()
        assert info.value.reason == "not_verified"
    clock.now = NOW + timedelta(days=31)
    with pytest.raises(NotLicensedError):
        guard.verify()
    for action in (guard.heartbeat_now, lambda: guard.import_revocations(crl)):
        with pytest.raises(NotLicensedError) as info:
            action()
        assert info.value.reason == "expired"
    assert server.reports == []  # nothing was sent


def test_a_guard_without_a_heartbeat_client_says_so(vendor: PrivateKey, tmp_path: Path) -> None:
    guard = _guard(_issue(vendor, ContentKey.generate()), [vendor], tmp_path, Clock(NOW))
    with pytest.raises(NotLicensedError) as info:
        guard.heartbeat_now()
    assert info.value.reason == "no_heartbeat_client"


def test_a_heartbeat_reports_this_devices_id(vendor: PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    guard = _guard(_issue(vendor, ContentKey.generate()), [vendor], tmp_path, clock, server)
    guard.heartbeat_now()
    (report,) = server.reports
    assert report.device_id == guard.license.claims.device.device_id  # type: ignore[union-attr]
    assert report.license_id == guard.license.license_id


# --- heartbeats -----------------------------------------------------------------


def test_an_unbound_license_beats_and_imports_lists_without_a_device(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = Server(vendor, clock)
    token = _issue(vendor, ContentKey.generate(), request=None, content_keys=[])
    guard = _guard(token, [vendor], tmp_path, clock, server)
    assert guard.heartbeat_now().ok
    (report,) = server.reports
    assert report.device_id is None and report.credential is None
    _, crl = _crl(vendor, licenses=frozenset({guard.license.license_id}))
    assert guard.import_revocations(crl) is True


class _GlobexServer(Server):
    def send(self, report: HeartbeatReport) -> HeartbeatReply:
        self.reports.append(report)
        verdict = HeartbeatVerdict(
            code="VALID",
            server_time=int(self.clock().timestamp()),
            license_id=report.license_id,
            device_id=report.device_id or "",
            nonce=report.nonce,
        )
        return HeartbeatReply(token=sign_reply(verdict, self.key, issuer="globex"))


def test_a_reply_in_another_vendors_name_is_refused_and_audited(
    vendor: PrivateKey, globex: PrivateKey, tmp_path: Path
) -> None:
    clock = Clock(NOW)
    server = _GlobexServer(globex, clock)  # a trusted key, signing in its own name
    guard = _guard(_issue(vendor, ContentKey.generate()), [vendor, globex], tmp_path, clock, server)
    with pytest.raises(HeartbeatReplyError) as info:
        guard.heartbeat_now()
    (record,) = _records(guard, "heartbeat_refused")
    assert record["reason"] == info.value.reason
    assert record["data"] == {"detail": str(info.value)} and str(info.value) != "None"


class _Unsigned:
    """A heartbeat client that answers with something other than a signed reply."""

    def send(self, report: Any) -> Any:
        return {"code": "VALID"}


def test_a_client_without_a_signed_reply_is_refused(vendor: PrivateKey, tmp_path: Path) -> None:
    guard = _guard(_issue(vendor, ContentKey.generate()), [vendor], tmp_path, Clock(NOW))
    guard._heartbeat = _Unsigned()
    with pytest.raises(HeartbeatReplyError):
        guard.heartbeat_now()
    assert [r["event"] for r in iter_records(guard.audit_path)][-1] == "heartbeat_refused"


def test_a_heartbeat_never_lowers_the_forward_only_clock(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    device, server_clock = Clock(NOW + timedelta(hours=1)), Clock(NOW)
    server = Server(vendor, server_clock)
    token = _issue(vendor, ContentKey.generate())
    guard = _guard(token, [vendor], tmp_path, device, server)
    guard.check()
    high = guard.state().high_water  # type: ignore[union-attr]
    assert high == (NOW + timedelta(hours=1)).timestamp()
    # the device clock steps back inside the tolerance; the server is behind both
    device.now = NOW + timedelta(minutes=57)
    assert guard.heartbeat_now().ok
    state = guard.state()
    assert state is not None and state.high_water == high
    # the forward-only clock did not move back either, and the beat is dated on it
    # (grace counts from the beat, not from whenever the state is next read)
    assert state.trusted == high and state.last_heartbeat_ok == high


class _Saying(Server):
    """A stand-in server whose verdicts carry a message."""

    message: str = ""

    def send(self, report: HeartbeatReport) -> HeartbeatReply:
        self.reports.append(report)
        verdict = HeartbeatVerdict(
            code=self.code,
            server_time=int(self.clock().timestamp()),
            license_id=report.license_id,
            device_id=report.device_id or "",
            nonce=report.nonce,
            message=self.message,
        )
        return HeartbeatReply(token=sign_reply(verdict, self.key, issuer="acme"))


def test_every_verdict_is_audited_and_a_lock_says_why(vendor: PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOW)
    server = _Saying(vendor, clock)
    guard = _guard(_issue(vendor, ContentKey.generate()), [vendor], tmp_path, clock, server)
    guard.heartbeat_now()
    server.code, server.message = "SUSPENDED", "invoice 42 is overdue"
    guard.heartbeat_now()
    beats = [(r["reason"], r["data"]) for r in _records(guard, "heartbeat")]
    assert beats == [(None, {"code": "VALID"}), ("suspended", {"code": "SUSPENDED"})]
    (locked,) = _records(guard, "locked")
    assert locked["reason"] == "suspended"
    assert locked["data"] == {"message": "invoice 42 is overdue"}


def test_a_report_carries_the_state_it_reports(vendor: PrivateKey, tmp_path: Path) -> None:
    clock = Clock(NOW + timedelta(minutes=5))
    server = Server(vendor, clock)
    token = _issue(vendor, ContentKey.generate(), max_calls=100)
    guard = _guard(token, [vendor], tmp_path, clock, server, reserve_calls=7)
    guard.check()  # reserves 7
    state = guard.state()
    assert state is not None and state.calls_reserved == 7
    guard.heartbeat_now()
    (report,) = server.reports
    assert report.calls_reserved == 7
    assert report.audit_head == state.audit_head and report.audit_head is not None
    assert report.time == clock.now.timestamp()


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), ModelsealError("x")])
def test_a_refused_reply_does_not_depend_on_the_audit_log(
    vendor: PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    clock = Clock(NOW)
    forger = Server(generate_private_key("ed25519"), clock)  # not trusted
    guard = _guard(_issue(vendor, ContentKey.generate()), [vendor], tmp_path, clock, forger)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise error

    monkeypatch.setattr(guard, "_log", broken)
    with pytest.raises(HeartbeatReplyError):
        guard.heartbeat_now()


def test_an_unlock_on_another_device_is_refused_as_the_wrong_device(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    token = _issue(vendor, ContentKey.generate())
    moved = make_device({"disk.root_serial": "NEWDISK", "net.mac": "52:54:00:ff:ff:ff"})
    guard = Guard(
        token,
        TrustStore([vendor.public_key()]),
        state_dir=tmp_path / "state",
        audience="acme/ocr",
        source=StaticSource(list(moved.components), moved.environment),
        clock=Clock(NOW),
        auto_heartbeat=False,
        verify=False,
    )
    # Refused like every other refusal of the Guard: the typed NotLicensedError
    # with the reason code only (a raw WrongDeviceError escaped before), by the
    # device check itself, not later when the state key does not open, and
    # audited where a refusal with no state on this device goes.
    with pytest.raises(NotLicensedError) as info:
        guard.unlock("AAAA-BBBB-CCCC-DDDD")
    assert type(info.value) is NotLicensedError
    assert info.value.reason == "wrong_device"
    assert str(info.value) == "not licensed"
    (record,) = [
        r
        for r in iter_records(tmp_path / "state" / "unverified.audit.jsonl")
        if r["event"] == "refused"
    ]
    assert record["reason"] == "wrong_device"
    assert "matches weight 5 of the 6" in record["data"]["detail"]
    assert not list((tmp_path / "state").glob("*.state"))


def test_an_unlock_of_an_expired_license_is_a_typed_refusal_in_its_own_log(
    vendor: PrivateKey, tmp_path: Path
) -> None:
    """Rule: ``Guard.unlock`` refuses a license that does not verify on this device
    as ``verify()`` does (NotLicensedError, reason code, audited in the license's
    own log on its bound device), never with the raw verification error."""
    token = _issue(vendor, ContentKey.generate())
    clock = Clock(NOW)
    device = make_device()
    kw: dict[str, Any] = dict(
        state_dir=tmp_path / "state",
        audience="acme/ocr",
        source=StaticSource(list(device.components), device.environment),
        clock=clock,
        auto_heartbeat=False,
    )
    Guard(token, TrustStore([vendor.public_key()]), **kw).close()
    clock.now = NOW + timedelta(days=400)
    guard = Guard(token, TrustStore([vendor.public_key()]), verify=False, **kw)
    with pytest.raises(NotLicensedError) as info:
        guard.unlock("AAAA-BBBB-CCCC-DDDD")
    assert type(info.value) is NotLicensedError
    assert info.value.reason == "expired"
    jti = read_unverified(token)[1]["jti"]
    last = list(iter_records(tmp_path / "state" / f"{jti}.audit.jsonl"))[-1]
    assert (last["event"], last["reason"]) == ("refused", "expired")


def test_a_list_older_than_the_last_imported_is_refused(vendor: PrivateKey, tmp_path: Path) -> None:
    """Rule (docs/cli.md, guard import-revocations): a revocation list no older than
    the newest one imported on this device, so an old list cannot replace a newer
    one that revoked; the newest ``issued_at`` is kept in the Guard's state, also
    across a restart. Found by mutation testing (guard/core.py
    ``import_revocations``: the kept ``issued_at`` could be dropped)."""
    clock = Clock(NOW)
    token = _issue(vendor, ContentKey.generate())
    guard = _guard(token, [vendor], tmp_path, clock)
    newer, crl_new = _crl(vendor, issued_at=int(NOW.timestamp()) - 60)
    _, crl_old = _crl(vendor, issued_at=int(NOW.timestamp()) - 3600)
    assert guard.import_revocations(crl_new) is False
    assert guard.import_revocations(crl_new) is False  # the same one again: fine
    for g in (guard, _guard(token, [vendor], tmp_path, clock)):
        with pytest.raises(ModelsealError) as info:
            g.import_revocations(crl_old)
        assert type(info.value).__name__ == "StaleRevocationListError"
        assert str(info.value) == (
            f"this revocation list (issued at {int(NOW.timestamp()) - 3600}) is older than "
            f"the one already imported (issued at {newer.issued_at})"
        )
