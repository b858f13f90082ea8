"""Every command, given the usual mistakes: one ``error:`` line, no traceback, the documented code.

The cases run in process through the real entry point (``cli._common.main``:
the same argument parsing, error map and output as the installed script),
so a hundred of them take seconds. ``test_every_command_is_walked`` makes
sure no command (including ones added later) escapes the generic probes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

import modelseal
from modelseal import cli
from modelseal.cli import _common
from modelseal.crypto import ContentKey, generate_private_key
from modelseal.device import Component, Environment, StaticSource, collect, make_request
from modelseal.license import issue_license

# docs/cli.md, "Exit codes"
USAGE, INPUT, TAMPERED, KEY, WRITE = 2, 3, 4, 5, 8
MALFORMED, UNTRUSTED, EXPIRED, WRONG_DEVICE, QUOTA, UNLOCK = 10, 11, 13, 15, 16, 20


@dataclass
class Result:
    code: int
    out: str
    err: str


class Runner:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: object) -> Result:
        argv = [str(a) for a in args]
        try:
            _common.main(lambda: cli.app, argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:  # pragma: no cover - main always exits
            code = -1
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)


@pytest.fixture
def ms(capsys: pytest.CaptureFixture[str]) -> Runner:
    return Runner(capsys)


def one_line_error(r: Result, code: int, *, match: str | None = None) -> None:
    assert r.code == code, (r.code, r.out, r.err)
    assert "Traceback" not in r.out + r.err
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    if match is not None:
        assert match in lines[0], lines[0]


@dataclass
class World:
    root: Path
    model: Path
    sealed: Path
    key: Path
    vendor: Path
    vendor_pub: Path
    other_pub: Path
    request: Path
    license: Path
    record: Path
    expired: Path
    foreign: Path
    binary: Path
    text: Path


def _fake_request_bytes() -> bytes:
    comps = [
        Component(kind="dmi.product_uuid", value="elsewhere", strength="strong", weight=3),
        Component(kind="os.hostname", value="elsewhere", strength="weak", weight=1),
    ]
    env = Environment(virtualization="none", details=(), platform="linux")
    return make_request(collect(StaticSource(comps, env)), label="elsewhere").to_bytes()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("walk")
    model = root / "m.bin"
    model.write_bytes(b"weights" * 100)
    sealed, key = root / "m.mseal", root / "m.key"
    modelseal.seal(model, sealed, key_out=key, model_id="acme/m")
    vendor = generate_private_key("ed25519")
    vendor.save(root / "vendor.pem")
    vendor.public_key().save(root / "vendor.pub")
    generate_private_key("ed25519").public_key().save(root / "other.pub")
    request = root / "request.json"
    request.write_bytes(make_request(collect(), label="walk").to_bytes())
    from modelseal.device import ActivationRequest

    def issue(path: Path, req: ActivationRequest, **kw: object) -> None:
        issued = issue_license(
            signing_key=vendor,
            issuer="acme",
            customer="ACME",
            audience=["acme/m"],
            request=req,
            content_keys=[(ContentKey.load(key), "acme/m")],
            **kw,  # type: ignore[arg-type]
        )
        path.write_text(issued.token + "\n")
        claims = issued.claims
        if issued.unlock_seed is not None and claims.device is not None and claims.unlock:
            from modelseal.cli.license import _vendor_record

            rec = _vendor_record(
                claims.jti,
                claims.device.device_id,
                issued.unlock_seed,
                codes=len(claims.unlock.verifiers),
                hours=claims.unlock.hours,
            )
            path.with_name(path.name + ".vendor.json").write_bytes(rec)

    req = ActivationRequest.load(request)
    issue(root / "license.jwt", req, max_calls=1)
    old = datetime(2020, 1, 1, tzinfo=UTC)
    issue(root / "expired.jwt", req, now=old, valid_for=timedelta(days=1))
    foreign = ActivationRequest.from_bytes(_fake_request_bytes())
    issue(root / "foreign.jwt", foreign)
    binary = root / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    text = root / "text.txt"
    text.write_text("just some words\n")
    return World(
        root=root,
        model=model,
        sealed=sealed,
        key=key,
        vendor=root / "vendor.pem",
        vendor_pub=root / "vendor.pub",
        other_pub=root / "other.pub",
        request=request,
        license=root / "license.jwt",
        record=root / "license.jwt.vendor.json",
        expired=root / "expired.jwt",
        foreign=foreign_path(root),
        binary=binary,
        text=text,
    )


def foreign_path(root: Path) -> Path:
    return root / "foreign.jwt"


@pytest.fixture
def cwd(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


# --- seal / inspect / verify ---------------------------------------------------


def test_seal_bad_inputs(ms: Runner, world: World, cwd: Path) -> None:
    w = world
    one_line_error(
        ms("seal", cwd / "missing.bin", "-o", "x.mseal", "--new-key-out", "x.key"), INPUT
    )
    one_line_error(ms("seal", w.model, "-o", "x.mseal"), USAGE)
    one_line_error(
        ms("seal", w.model, "-o", "x.mseal", "--new-key-out", "x.key", "--content-key", w.key),
        USAGE,
    )
    for bad in (
        ["--aead", "rot13"],
        ["--chunk-size", "1000"],
        ["--chunk-size", "3072"],
        ["--framework", "tensorflow"],
        ["--no-such-option"],
    ):
        one_line_error(ms("seal", w.model, "-o", "x.mseal", "--new-key-out", "x.key", *bad), USAGE)
    one_line_error(ms("seal", w.model, "-o", "-", "--new-key-out", "x.key"), USAGE)
    one_line_error(ms("seal", w.model, "-o", "x.mseal", "--content-key", w.binary), KEY)
    one_line_error(ms("seal", w.model, "-o", "x.mseal", "--content-key", w.text), KEY)
    assert not (cwd / "x.mseal").exists() and not (cwd / "x.key").exists()
    assert list(cwd.iterdir()) == []  # no temporary files left either


def test_seal_never_loses_a_key(ms: Runner, world: World, cwd: Path) -> None:
    """Regressions from the trial (issue #7, Deliver 1)."""
    key = cwd / "model.key"
    ContentKey.generate().save(key)
    before = key.read_bytes()
    # --out over the key it seals with: once replaced the key with the container (rc 0)
    one_line_error(
        ms("seal", world.model, "--out", key, "--key-file", key), USAGE, match="also an input"
    )
    assert key.read_bytes() == before
    # an existing --out is refused, then replaced only with --force
    (cwd / "m.mseal").write_bytes(b"precious")
    one_line_error(ms("seal", world.model, "-o", "m.mseal", "--content-key", key), USAGE)
    assert (cwd / "m.mseal").read_bytes() == b"precious"
    assert ms("seal", world.model, "-o", "m.mseal", "--content-key", key, "--force").code == 0
    assert modelseal.inspect(cwd / "m.mseal").key_id == ContentKey.load(key).key_id
    # a missing folder for the new key: nothing is written, not even the container
    r = ms("seal", world.model, "-o", "n.mseal", "--new-key-out", cwd / "nodir" / "k.key")
    one_line_error(r, WRITE, match="nodir")
    assert not (cwd / "n.mseal").exists()
    # the same key and container names
    one_line_error(ms("seal", world.model, "-o", "s.x", "--new-key-out", "s.x"), USAGE)
    assert not (cwd / "s.x").exists()


def test_seal_read_only_key_folder_leaves_no_container(ms: Runner, world: World, cwd: Path) -> None:
    if os.geteuid() == 0:
        # root writes into a mode-0500 folder; sysfs refuses new files even to root
        target, ro = Path("/sys/modelseal-walk-test.key"), None
    else:
        ro = cwd / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "k.key"
    try:
        r = ms("seal", world.model, "-o", "r.mseal", "--new-key-out", target)
        one_line_error(r, WRITE, match=f"cannot write {target}")
    finally:
        if ro is not None:
            ro.chmod(0o700)
    assert not (cwd / "r.mseal").exists()


def test_seal_error_names_the_users_path_not_a_temporary_file(
    ms: Runner, world: World, cwd: Path
) -> None:
    r = ms("seal", world.model, "-o", cwd / "nodir" / "x.mseal", "--new-key-out", "k.key")
    one_line_error(r, WRITE, match="nodir/x.mseal")
    assert ".tmp" not in r.err
    assert not (cwd / "k.key").exists()


def test_inspect_and_verify_bad_inputs(ms: Runner, world: World, cwd: Path) -> None:
    w = world
    one_line_error(ms("inspect", cwd / "missing.mseal"), INPUT)
    one_line_error(ms("inspect", w.binary), INPUT)
    one_line_error(ms("inspect", "-"), USAGE)
    one_line_error(ms("verify", w.sealed), USAGE)  # no key
    one_line_error(ms("verify", w.sealed, "--content-key", w.binary), KEY)
    other = cwd / "other.key"
    ContentKey.generate().save(other)
    one_line_error(ms("verify", w.sealed, "--content-key", other), KEY)
    blob = bytearray(w.sealed.read_bytes())
    blob[-5] ^= 1
    (cwd / "t.mseal").write_bytes(bytes(blob))
    one_line_error(ms("verify", cwd / "t.mseal", "--content-key", w.key), TAMPERED)


# --- keys and device ----------------------------------------------------------------


def test_keys_and_device_bad_inputs(ms: Runner, world: World, cwd: Path) -> None:
    one_line_error(ms("keys", "generate", "--alg", "dsa"), USAGE)
    one_line_error(ms("keys", "generate", "--alg", "rsa", "--rsa-bits", "1024"), USAGE)
    one_line_error(ms("keys", "generate", "--passphrase-env", "MODELSEAL_TEST_UNSET_VAR"), USAGE)
    one_line_error(ms("keys", "generate", "--name", "a/b"), USAGE)
    assert ms("keys", "generate", "--out-dir", "k").code == 0
    pem = (cwd / "k" / "vendor.pem").read_bytes()
    one_line_error(ms("keys", "generate", "--out-dir", "k"), USAGE, match="exists")
    assert (cwd / "k" / "vendor.pem").read_bytes() == pem
    one_line_error(ms("device", "fingerprint", "--threshold", "0"), USAGE)
    one_line_error(ms("device", "request", "--label", "  "), USAGE)
    one_line_error(ms("device", "request", "--out", cwd / "nodir" / "r.json"), WRITE)
    (cwd / "request.json").write_text("mine")
    one_line_error(ms("device", "request"), USAGE, match="exists")
    assert (cwd / "request.json").read_text() == "mine"


def test_device_request_defaults_its_label_to_the_hostname(ms: Runner, cwd: Path) -> None:
    import socket

    r = ms("device", "request", "--out", "req.json", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["ok"] is True and data["label"] == socket.gethostname().strip()[:64]
    assert (cwd / "req.json").stat().st_mode & 0o777 == 0o600


# --- license ---------------------------------------------------------------------


def _issue(w: World, *extra: object) -> tuple[object, ...]:
    return (
        "license",
        "issue",
        "--signing-key",
        w.vendor,
        "--request",
        w.request,
        "--model",
        w.sealed,
        "--content-key",
        w.key,
        *extra,
    )


@pytest.mark.parametrize(
    "bad",
    [
        ["--days", "0"],
        ["--days", "-5"],
        ["--days", "100000000"],
        ["--max-calls", "0"],
        ["--max-devices", "-3"],
        ["--heartbeat-interval", "0"],
        ["--customer", ""],
        ["--issuer", ""],
        ["--customer", "x" * 100_000],
        ["--jws-alg", "RS256"],
        ["--jws-alg", "HS256"],
        ["--grace", "soon"],
        ["--not-before", "yesterday"],
        ["--plan", "forever"],
        ["--threshold", "1000"],
        ["--features", "f" * 65],
    ],
)
def test_license_issue_bad_values(ms: Runner, world: World, cwd: Path, bad: list[str]) -> None:
    args = ["--customer", "ACME", "--out", "l.jwt"]
    if bad[0] == "--customer":
        args = args[2:]
    one_line_error(ms(*_issue(world, *args, *bad)), USAGE)
    assert list(cwd.iterdir()) == []


def test_license_issue_never_overwrites_a_license_record_or_key(
    ms: Runner, world: World, cwd: Path
) -> None:
    """Regressions: --out over a shipped license lost its unlock record; over the
    signing key it replaced the key with the JWT (both rc 0)."""
    w = world
    assert ms(*_issue(w, "--customer", "ACME", "--out", "l.jwt")).code == 0
    lic, rec = (cwd / "l.jwt").read_bytes(), (cwd / "l.jwt.vendor.json").read_bytes()
    one_line_error(ms(*_issue(w, "--customer", "B", "--out", "l.jwt")), USAGE, match="exists")
    assert (cwd / "l.jwt").read_bytes() == lic
    assert (cwd / "l.jwt.vendor.json").read_bytes() == rec
    # only the record is in the way: still refused, and no license appears
    (cwd / "l.jwt").unlink()
    one_line_error(ms(*_issue(w, "--customer", "B", "--out", "l.jwt")), USAGE)
    assert not (cwd / "l.jwt").exists()
    assert (cwd / "l.jwt.vendor.json").read_bytes() == rec
    pem = w.vendor.read_bytes()
    one_line_error(ms(*_issue(w, "--customer", "B", "--out", w.vendor, "--force")), USAGE)
    assert w.vendor.read_bytes() == pem
    one_line_error(ms(*_issue(w, "--customer", "B", "--out", "-")), USAGE)


def test_license_issue_success_names_both_files(ms: Runner, world: World, cwd: Path) -> None:
    r = ms(*_issue(world, "--customer", "ACME", "--out", "a.jwt"))
    assert r.code == 0, r.err
    assert "a.jwt" in r.out and "a.jwt.vendor.json" in r.out and "unlock codes" in r.out
    assert (cwd / "a.jwt.vendor.json").stat().st_mode & 0o777 == 0o600
    r = ms(*_issue(world, "--customer", "ACME", "--out", "b.jwt", "--json"))
    data = json.loads(r.out)
    assert data["ok"] is True and data["written"] == ["b.jwt", "b.jwt.vendor.json"]


def test_license_issue_warns_when_the_license_cannot_work_there(
    ms: Runner, world: World, cwd: Path
) -> None:
    args = ("--customer", "ACME", "--not-before", "2020-01-01T00:00:00Z", "--days", "1")
    r = ms(*_issue(world, *args, "--out", "old.jwt"))
    assert r.code == 0 and "already expired" in r.err, r.err


def test_license_inspect_and_verify_bad_inputs(ms: Runner, world: World, cwd: Path) -> None:
    w = world
    for cmd in (["inspect"], ["verify", "--trust", w.vendor_pub]):
        one_line_error(ms("license", *cmd, w.binary), MALFORMED)
        one_line_error(ms("license", *cmd, w.text), MALFORMED)
        one_line_error(ms("license", *cmd, cwd / "missing.jwt"), INPUT)
    one_line_error(ms("license", "verify", w.license, "--trust", w.other_pub), UNTRUSTED)
    one_line_error(ms("license", "verify", w.expired, "--trust", w.vendor_pub), EXPIRED)
    os.environ.pop("MODELSEAL_TRUST", None)
    one_line_error(ms("license", "verify", w.license), USAGE, match="MODELSEAL_TRUST")


def test_license_inspect_reads_stdin_and_prints_no_reprs(
    ms: Runner, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(world.license.read_bytes())))
    r = ms("license", "inspect", "-")
    assert r.code == 0, r.err
    assert "{'" not in r.out and "('" not in r.out and "UNVERIFIED" in r.out


@pytest.mark.parametrize(
    "bad",
    [
        ["--serial", "70000"],
        ["--serial", "-1"],
        ["--serial", "8"],  # the license carries codes #0 to #7
        ["--serial", "x"],
        ["--hours", "24"],  # no longer an option: the license fixed the hours
    ],
)
def test_unlock_code_bad_values(ms: Runner, world: World, bad: list[str]) -> None:
    args = {"--serial": "1"}
    args.update({bad[0]: bad[1]})
    flat = [x for kv in args.items() for x in kv]
    one_line_error(ms("license", "unlock-code", "--record", world.record, *flat), USAGE)


def test_unlock_code_bad_records(ms: Runner, world: World) -> None:
    for record in (world.binary, world.text, world.license):
        one_line_error(ms("license", "unlock-code", "--record", record, "--serial", "1"), KEY)


# --- guard and audit -----------------------------------------------------------------


def test_guard_refusals_have_one_code_per_class(ms: Runner, world: World, tmp_path: Path) -> None:
    """Regression: `guard status` exited 10 for every refusal."""
    w = world
    st = ["--state-dir", tmp_path / "state"]
    one_line_error(
        ms("guard", "status", "--license", w.expired, "--trust", w.vendor_pub, *st), EXPIRED
    )
    one_line_error(
        ms("guard", "status", "--license", w.foreign, "--trust", w.vendor_pub, *st), WRONG_DEVICE
    )
    one_line_error(
        ms("guard", "status", "--license", w.license, "--trust", w.other_pub, *st), UNTRUSTED
    )
    one_line_error(
        ms("guard", "status", "--license", w.binary, "--trust", w.vendor_pub, *st), MALFORMED
    )
    one_line_error(
        ms("guard", "status", "--license", tmp_path / "none.jwt", "--trust", w.vendor_pub, *st),
        INPUT,
    )
    r = ms("guard", "status", "--license", w.expired, "--trust", w.vendor_pub, *st, "--json")
    data = json.loads(r.out)
    assert r.code == EXPIRED and data["ok"] is False and data["reason"] == "expired"
    assert data["error"]["exit_code"] == EXPIRED


def test_guard_status_over_quota_and_state_shown(ms: Runner, world: World, tmp_path: Path) -> None:
    from modelseal.guard import Guard

    state = tmp_path / "state"
    args = ("guard", "status", "--license", world.license, "--trust", world.vendor_pub)
    r = ms(*args, "--state-dir", state, "--json")
    assert r.code == 0, r.err
    info = json.loads(r.out)
    assert info["state_dir"] == str(state) and info["audit_log"].startswith(str(state))
    assert info["audit_head"] and info["trusted_time"] and info["clock_high_water"]
    r = ms(*args, "--state-dir", state)
    assert "audit log" in r.out and "trusted time" in r.out and str(state) in r.out
    guard = Guard(world.license, world.vendor_pub, state_dir=state, audience="acme/m")
    guard.check()  # the license allows one call: this is it
    one_line_error(ms(*args, "--state-dir", state), QUOTA)


def test_guard_reads_modelseal_license_and_trust(
    ms: Runner, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELSEAL_LICENSE", str(world.license))
    monkeypatch.setenv("MODELSEAL_TRUST", f"{world.other_pub}{os.pathsep}{world.vendor_pub}")
    r = ms("guard", "status", "--state-dir", tmp_path / "s", "--json")
    assert r.code == 0, r.err
    monkeypatch.delenv("MODELSEAL_LICENSE")
    one_line_error(ms("guard", "status", "--state-dir", tmp_path / "s"), USAGE)
    # and the help says so (rich markup once swallowed "[env: ...]" from help texts)
    monkeypatch.setenv("COLUMNS", "400")
    text = ms("guard", "status", "-h").out
    assert "$MODELSEAL_LICENSE" in text and "$MODELSEAL_TRUST" in text


def test_help_shows_the_default_threshold(ms: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per option, whatever the terminal
    lines = [
        ln
        for ln in ms("license", "issue", "-h").out.splitlines()
        if "--threshold" in ln and "int" in ln
    ]
    assert len(lines) == 1 and "(default: a majority" in lines[0], lines


def test_unlock_codes_refused_exit_20(ms: Runner, world: World, tmp_path: Path) -> None:
    """Regression: a reused unlock code exited 1 ("a bug")."""
    state = tmp_path / "state"
    g = ("--license", world.license, "--trust", world.vendor_pub, "--state-dir", state)
    code = json.loads(
        ms("license", "unlock-code", "--record", world.record, "--serial", "7", "--json").out
    )["code"]
    r = ms("guard", "unlock", code, *g, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["unlocked_until"]
    one_line_error(ms("guard", "unlock", code, *g), UNLOCK, match="already used")
    one_line_error(ms("guard", "unlock", "NOT-A-CODE", *g), UNLOCK)
    other = json.loads(
        ms("license", "unlock-code", "--record", world.record, "--serial", "6", "--json").out
    )["code"]
    # a genuine code of this license, presented for another license: refused
    g2 = ("--license", world.expired, "--trust", world.vendor_pub, "--state-dir", state)
    r = ms("guard", "unlock", other, *g2)
    assert r.code != 0 and "Traceback" not in r.err


def test_audit_verify_bad_inputs(ms: Runner, world: World, cwd: Path) -> None:
    one_line_error(ms("audit", "verify", cwd / "missing.jsonl"), INPUT)
    one_line_error(ms("audit", "verify", world.binary), INPUT)
    one_line_error(ms("audit", "verify", world.text, "--expect-head", "nonsense"), USAGE)
    one_line_error(ms("audit", "verify", world.text, "--mac-key", world.binary), KEY)


# --- conventions across every command --------------------------------------------------


def _leaf_commands() -> list[list[str]]:
    root = typer.main.get_command(cli.app)
    found: list[list[str]] = []

    def walk(cmd: object, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*path, name])
        else:
            found.append(path)

    walk(root, [])
    return found


def test_every_command_is_walked(ms: Runner) -> None:
    """Generic probes over every command the app has, including ones added later."""
    leaves = _leaf_commands()
    assert ["seal"] in leaves and ["license", "issue"] in leaves
    for path in leaves:
        one_line_error(ms(*path, "--no-such-option"), USAGE)
        r = ms(*path, "--no-such-option", "--json")
        assert r.code == USAGE and json.loads(r.out)["ok"] is False, (path, r.out)
        r = ms(*path, "-h")
        assert r.code == 0 and "Usage" in r.out, path
        assert "Example" in r.out, f"{' '.join(path)} --help shows no example"


def test_version_and_no_arguments(ms: Runner) -> None:
    r = ms("--version")
    assert r.code == 0 and r.out.strip() == f"modelseal {modelseal.__version__}"
    r = ms()
    assert r.code == USAGE and "Usage" in r.out and "Traceback" not in r.err


def test_an_unexpected_failure_is_one_line_and_exit_1(
    ms: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelseal.cli.device as device_cli

    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(device_cli, "collect", boom)
    monkeypatch.delenv("MODELSEAL_DEBUG", raising=False)
    one_line_error(ms("device", "fingerprint"), 1, match="a bug in modelseal")


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """Regression: Ctrl-C during start-up printed a traceback.

    A real SIGINT, delivered while the command is busy (collecting the
    fingerprint), to the real entry point in a separate process.
    """
    script = (
        "import os, signal, sys, time\n"
        "from modelseal import _entry\n"
        "import modelseal.cli.device as d\n"
        "def slow(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(30)\n"
        "d.collect = slow\n"
        "sys.argv = ['modelseal', 'device', 'fingerprint']\n"
        "_entry.main()\n"
    )
    started = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert time.monotonic() - started < 30
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr.strip() == "error: interrupted"


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=30))
def test_durations_parse_or_fail_typed(text: str) -> None:
    from modelseal.cli.license import parse_duration

    maximum = timedelta(days=30)
    from modelseal.errors import InvalidArgumentError

    bounds = {"minimum": timedelta(minutes=1), "maximum": maximum}
    try:
        value = parse_duration(text, option="--valid-for", **bounds)
    except InvalidArgumentError as exc:
        message = str(exc)
        value = None
    if value is None:
        assert message.startswith("--valid-for")
    else:
        assert timedelta(minutes=1) <= value <= maximum


def test_unbound_license_to_stdout(ms: Runner, world: World, cwd: Path) -> None:
    args = ("license", "issue", "--signing-key", world.vendor, "--customer", "ACME")
    r = ms(*args, "--product", "acme/m", "--out", "-")
    assert r.code == 0, r.err
    assert r.out.count(".") == 2 and list(cwd.iterdir()) == []
    one_line_error(ms(*args, "--product", "acme/m", "--out", "-", "--json"), USAGE)


def test_every_error_class_has_a_documented_exit_code() -> None:
    """docs/cli.md's table and the error classes agree (the trial found codes
    the table did not list)."""
    import importlib
    import re

    from modelseal.errors import ModelsealError

    # every module that defines error classes, so __subclasses__ sees them all
    modules = (
        "modelseal.guard.core",
        "modelseal.guard.unlock",
        "modelseal.license",
        "modelseal.device",
    )
    for name in modules:
        importlib.import_module(name)

    doc = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", doc, flags=re.M)}

    def subclasses(cls: type) -> list[type]:
        return [s for c in cls.__subclasses__() for s in (c, *subclasses(c))]

    for cls in subclasses(ModelsealError):
        if cls.__module__.startswith("modelseal.cli"):
            continue  # CommandError carries the code it is given
        try:
            exc = cls("x")
        except TypeError:
            continue  # needs other arguments; its base's code is checked
        code = _common.exit_code_for(exc)
        assert code in documented, cls
        # exit 1 means "a bug": no error raised on purpose may use it
        assert code != 1 or cls.__name__ == "DeviceError", cls
    for reason, code in _common.reason_exit_codes().items():
        assert code in documented, reason
    assert {0, 1, 2, 3, 8, 19, 130} <= documented
