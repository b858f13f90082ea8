"""Regressions for the Guard findings of the device-side review (issue #8).

Each test runs the attack the review ran, through the public API (or the
CLI where the attack used it), and checks it no longer works.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file
from typer.testing import CliRunner

import modelseal
from modelseal.crypto import ContentKey, PrivateKey
from modelseal.guard import Guard, NotLicensedError
from modelseal.guard.audit import (
    Head,
    canonical_json,
    genesis_hash,
    iter_records,
    record_hash,
)
from modelseal.guard.audit import verify as verify_audit
from modelseal.guard.state import StateStore
from modelseal.license import TrustStore, open_state_key
from tests.guard_core.test_guard import FakeClock, _guard, _license
from tests.license.conftest import NOW, make_device

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(modelseal.__file__).resolve().parents[1]  # the modelseal under test
Model = tuple[Path, ContentKey]


def _anchor(guard: Guard) -> Head | None:
    """The audit head the guard's state anchors (read with the device's state key)."""
    lic = guard.license
    store = StateStore(
        guard.audit_path.with_name(f"{lic.claims.jti}.state"),
        open_state_key(lic, make_device()),
        lic.claims.jti,
    )
    state = store.read()
    assert state is not None and state.audit_head is not None
    return Head(int(str(state.audit_head[0])), str(state.audit_head[1]))


def _events(path: Path) -> list[tuple[str, str | None]]:
    return [(r["event"], r["reason"]) for r in iter_records(path)]


# --- item 2: fork() must not multiply the call quota ------------------------------


def _in_fork(work: Callable[[], int]) -> int:
    """Run ``work`` in a forked child (as a pre-fork server would) and return its result."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        try:
            result = work()
        except BaseException:
            result = -1
        os.write(write, str(result).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        out = pipe.read()
    os.waitpid(pid, 0)
    return int(out)


def test_forked_children_cannot_spend_the_parents_reserved_block(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    guard = _guard(
        vendor, _license(vendor, cek, max_calls=100), tmp_path, FakeClock(NOW), reserve_calls=50
    )
    guard.check()  # the parent reserves 50 and holds 49 in memory

    def spend() -> int:
        done = 0
        for _ in range(200):
            try:
                guard.check()
            except NotLicensedError:
                break
            done += 1
        guard.close()  # what the child's atexit does
        return done

    children = [_in_fork(spend) for _ in range(4)]
    # the review saw 1,261 calls against a limit of 100: each child spent the
    # parent's block, then reserved its own
    assert sum(children) == 50, children
    assert guard.usage() == 51  # the parent's block is intact
    for _ in range(49):
        guard.check()
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "over_quota"


def test_a_forked_childs_exit_gives_back_nothing_it_did_not_reserve(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    token = _license(vendor, cek, max_calls=100)
    guard = _guard(vendor, token, tmp_path, FakeClock(NOW), reserve_calls=50)
    guard.check()

    def exit_at_once() -> int:
        guard.close()  # atexit in a pre-fork worker that served nothing
        return 0

    assert _in_fork(exit_at_once) == 0
    # the block is still counted: another process sees 50 reserved, not 0
    other = _guard(vendor, token, tmp_path, FakeClock(NOW), reserve_calls=1)
    assert other.usage() == 50
    guard.close()
    assert other.usage() == 1


def test_a_fork_started_pool_is_counted_exactly(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    guard = _guard(
        vendor, _license(vendor, cek, max_calls=60), tmp_path, FakeClock(NOW), reserve_calls=20
    )
    guard.check()
    global _POOL_GUARD
    _POOL_GUARD = guard
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            done = pool.map(_pool_spend, [30] * 3)
    finally:
        _POOL_GUARD = None
    assert sum(done) <= 40  # 60 minus the parent's block of 20
    guard.close()
    # every call a child made is counted; unused child reservations stay spent
    assert sum(done) + 1 <= guard.usage() <= 60


_POOL_GUARD: Guard | None = None


def _pool_spend(calls: int) -> int:
    assert _POOL_GUARD is not None
    done = 0
    for _ in range(calls):
        try:
            _POOL_GUARD.check()
        except NotLicensedError:
            break
        done += 1
    return done


# --- item 6: audit edits are not re-anchored; early refusals are anchored --------


def _rehash_without(path: Path, drop: Callable[[dict[str, object]], bool]) -> None:
    """The review's edit: drop records, renumber, re-hash the whole (unkeyed) chain."""
    prev = genesis_hash()
    lines: list[bytes] = []
    for record in [r for r in iter_records(path) if not drop(r)]:
        record = dict(record, seq=len(lines), prev=prev)
        record["hash"] = record_hash(record)
        prev = str(record["hash"])
        lines.append(canonical_json(record) + b"\n")
    path.write_bytes(b"".join(lines))


def test_a_log_rewritten_while_the_guard_runs_is_not_re_anchored(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek, max_calls=1000)
    guard = _guard(vendor, token, tmp_path, clock, reserve_calls=1)
    guard.check()
    with pytest.raises(NotLicensedError):
        guard.check("hd")
    genuine = _anchor(guard)
    assert genuine is not None
    _rehash_without(guard.audit_path, lambda r: r["event"] == "refused")
    assert verify_audit(guard.audit_path).ok  # a valid chain, without the refusal
    with pytest.raises(NotLicensedError) as info:
        guard.check()  # needs a reservation: an anchored append
    assert info.value.reason == "state_tampered"
    assert _anchor(guard) == genuine  # the rewrite was not anchored
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock)
    assert info.value.reason == "state_tampered"
    from modelseal.cli import app

    result = CliRunner().invoke(
        app,
        ["audit", "verify", str(guard.audit_path), "--expect-head", f"{genuine[0]}:{genuine[1]}"],
    )
    assert result.exit_code == 4, result.output


def test_a_recheck_notices_a_rewritten_log(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    clock = FakeClock(NOW)
    guard = _guard(vendor, _license(vendor, cek), tmp_path, clock, recheck_every=timedelta(0))
    with pytest.raises(NotLicensedError):
        guard.check("hd")
    _rehash_without(guard.audit_path, lambda r: r["event"] == "refused")
    with pytest.raises(NotLicensedError) as info:
        guard.check()
    assert info.value.reason == "state_tampered"


def test_a_refusal_before_verification_is_anchored(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek, allow_container=False)
    guard = _guard(vendor, token, tmp_path, clock)
    guard.check()
    # started in a container the license does not allow: refused before the
    # license verifies on this device, recorded in the license's own log
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock, device=make_device(virtualization="container"))
    assert info.value.reason == "environment_refused"
    assert _events(guard.audit_path)[-1] == ("refused", "environment_refused")
    assert not (tmp_path / "state" / "unverified.audit.jsonl").exists()
    # the review deleted the evidence of the refusal: now that locks the license
    lines = guard.audit_path.read_bytes().splitlines(keepends=True)
    guard.audit_path.write_bytes(b"".join(lines[:-1]))
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock)
    assert info.value.reason == "state_tampered"


def test_an_expired_start_on_the_bound_device_is_anchored(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek)
    guard = _guard(vendor, token, tmp_path, clock)
    clock.now = NOW + timedelta(days=31)
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock)
    assert info.value.reason == "expired"
    assert _events(guard.audit_path)[-1] == ("refused", "expired")
    report = verify_audit(guard.audit_path, expected_head=_anchor(guard))
    assert report.ok and report.head == _anchor(guard)


# --- item 7: a full disk is a typed, retried refusal, never a tamper lock ---------

_FULL_DISK_SCRIPT = textwrap.dedent(
    """
    import asyncio, errno, json, resource, signal, sys
    from modelseal.crypto import load_public_key
    from modelseal.device import StaticSource
    from modelseal.guard import Guard, LicenseASGIMiddleware, NotLicensedError
    from modelseal.license import TrustStore
    from tests.license.conftest import NOW, make_device

    token, pub, state_dir = sys.argv[1:4]
    dev = make_device()
    guard = Guard(token, TrustStore([load_public_key(pub.encode())]), state_dir=state_dir,
                  audience="acme/ocr", source=StaticSource(list(dev.components), dev.environment),
                  clock=lambda: NOW, reserve_calls=2)
    log = guard.audit_path
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    out = {}

    def calls(n):
        seen = []
        for _ in range(n):
            try:
                guard.check()
                seen.append("ok")
            except NotLicensedError as exc:
                seen.append(exc.reason)
        return seen

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def status(mw):
        sent = []
        async def receive():
            return {"type": "http.request", "body": b""}
        async def send(m):
            sent.append(m)
        asyncio.run(mw({"type": "http", "path": "/infer", "root_path": ""}, receive, send))
        start = next(m for m in sent if m["type"] == "http.response.start")
        return start["status"], dict(start["headers"]).get(b"retry-after", b"").decode()

    out["before"] = calls(2)
    # the log may grow by 20 bytes: the next append tears mid-line
    resource.setrlimit(resource.RLIMIT_FSIZE, (log.stat().st_size + 20, hard))
    out["torn"] = calls(3)
    out["torn_size_kept"] = log.stat().st_size
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))  # nothing can be written
    out["full"] = calls(5)
    out["http_default"] = status(LicenseASGIMiddleware(app, guard))
    out["http_503"] = status(LicenseASGIMiddleware(app, guard, unavailable_status=503))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # the disk was freed
    out["after"] = calls(4)
    out["http_after"] = status(LicenseASGIMiddleware(app, guard, unavailable_status=503))
    guard.close()
    print(json.dumps(out))
    """
)


def test_a_full_disk_is_a_typed_refusal_and_recovers_without_unlock(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    import json

    _, cek = model
    token = _license(vendor, cek, max_calls=1000)
    clock = FakeClock(NOW)
    _guard(vendor, token, tmp_path, clock).close()  # activated earlier
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _FULL_DISK_SCRIPT,
            token,
            vendor.public_key().to_pem().decode(),
            str(tmp_path / "state"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{ROOT}"},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["before"] == ["ok", "ok"]
    # one reservation of 2 was in memory when the limit hit; then every call
    # that needs the disk is refused, typed, not an OSError or a tamper verdict
    assert out["torn"] == ["storage_unavailable"] * 3
    assert out["full"] == ["storage_unavailable"] * 5
    assert out["http_default"] == [403, ""]
    assert out["http_503"] == [503, "5"]
    assert out["after"] == ["ok"] * 4  # no unlock code, no restart
    assert out["http_after"] == [200, ""]
    # the torn line was cut back: the log is a whole chain, anchored, no false lock
    guard = _guard(vendor, token, tmp_path, clock)
    report = verify_audit(guard.audit_path, expected_head=_anchor(guard))
    assert report.ok and report.torn_tail_bytes == 0
    assert guard.usage() == 2 + 4 + 1  # the calls made, HTTP included; none lost or doubled


def test_a_failed_state_write_takes_its_audit_record_back(
    vendor: PrivateKey, model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The window the review hit: the record is appended, the state write fails.

    Before the fix every failed write left one more unanchored record, and
    after the third the next start saw "a state older than its log": a
    permanent false tamper lock. ENOSPC is injected at the rename, the one
    failure a size limit cannot produce while the (larger) log still grows.
    """
    import errno

    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek, max_calls=1000)
    guard = _guard(vendor, token, tmp_path, clock, reserve_calls=1)
    guard.check()
    records = len(list(iter_records(guard.audit_path)))
    real_replace = os.replace

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    for _ in range(5):
        with pytest.raises(NotLicensedError) as info:
            guard.check()
        assert info.value.reason == "storage_unavailable"
    assert len(list(iter_records(guard.audit_path))) == records
    assert not list((tmp_path / "state").glob(".*.tmp"))
    monkeypatch.setattr(os, "replace", real_replace)
    guard.check()  # recovers in place
    restarted = _guard(vendor, token, tmp_path, clock)  # and no tamper lock
    restarted.check()


def test_storage_errors_are_503_when_the_app_asks_for_it(
    vendor: PrivateKey, model: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from modelseal.guard import LicenseWSGIMiddleware, fastapi_dependency

    _, cek = model
    guard = _guard(
        vendor, _license(vendor, cek, max_calls=100), tmp_path, FakeClock(NOW), reserve_calls=1
    )

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    api = FastAPI(debug=True)

    @api.get("/a", dependencies=[Depends(fastapi_dependency(guard, unavailable_status=503))])
    def a() -> dict[str, str]:
        return {}

    @api.get("/b", dependencies=[Depends(fastapi_dependency(guard))])
    def b() -> dict[str, str]:
        return {}

    client = TestClient(api, raise_server_exceptions=False)
    r = client.get("/a")
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert "Traceback" not in r.text
    assert client.get("/b").status_code == 403

    statuses: list[str] = []
    wsgi = LicenseWSGIMiddleware(lambda env, start: [b"ok"], guard, unavailable_status=503)
    body = b"".join(wsgi({"PATH_INFO": "/x"}, lambda s, h: statuses.append(s)))
    assert statuses == ["503 Service Unavailable"] and b"retry" in body


# --- item 8: concurrent starts are race-free ---------------------------------------


def _start_together(args: tuple[str, str, str, Any]) -> str:
    token, pub, state_dir, barrier = args
    from modelseal.crypto import load_public_key
    from modelseal.device import StaticSource

    dev = make_device()
    trust = TrustStore([load_public_key(pub.encode())])
    barrier.wait(timeout=60)
    try:
        for _ in range(STARTS):
            guard = Guard(
                token,
                trust,
                state_dir=state_dir,
                audience="acme/ocr",
                source=StaticSource(list(dev.components), dev.environment),
                clock=lambda: NOW,
                reserve_calls=1,
            )
            guard.check()
            with contextlib.suppress(NotLicensedError):
                guard.check("hd")
            guard.close()
    except NotLicensedError as exc:
        return exc.reason
    return "ok"


STARTS = 6


def test_concurrent_starts_are_not_refused_as_tampered(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    _, cek = model
    token = _license(vendor, cek, max_calls=10_000)
    pub = vendor.public_key().to_pem().decode()
    ctx = multiprocessing.get_context("spawn")
    n = 8
    with ctx.Manager() as manager:
        barrier = manager.Barrier(n)
        with ctx.Pool(n) as pool:
            results = pool.map(
                _start_together, [(token, pub, str(tmp_path / "state"), barrier)] * n
            )
    assert results == ["ok"] * n
    guard = _guard(vendor, token, tmp_path, FakeClock(NOW))
    report = verify_audit(guard.audit_path, expected_head=_anchor(guard))
    assert report.ok
    refused = [r["reason"] for r in iter_records(guard.audit_path) if r["event"] == "refused"]
    assert set(refused) == {"feature_missing"}  # no false tamper records
    assert guard.usage() == STARTS * n


# --- item 9: one refused load is that call's refusal ---------------------------------


def test_a_refused_model_does_not_disable_the_guard(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    path, cek = model
    guard = _guard(vendor, _license(vendor, cek), tmp_path, FakeClock(NOW))
    save_file({"w": np.ones(3, dtype=np.float32)}, str(tmp_path / "t.safetensors"))
    modelseal.seal(tmp_path / "t.safetensors", tmp_path / "t.mseal", model_id="acme/translate")
    with pytest.raises(NotLicensedError) as info:
        guard.load(tmp_path / "t.mseal", framework="numpy")
    assert info.value.reason == "wrong_audience"
    # a model id the license covers, but a key it does not deliver
    modelseal.seal(tmp_path / "t.safetensors", tmp_path / "k.mseal", model_id="acme/ocr")
    with pytest.raises(NotLicensedError):
        guard.load(tmp_path / "k.mseal", framework="numpy")
    # every other request still works
    guard.check()
    guard.check("ocr")
    assert guard.load(path, framework="numpy")["w"].shape == (12,)


# --- item 11: the product is explicit ---------------------------------------------


def test_a_license_for_another_product_is_refused(vendor: PrivateKey, tmp_path: Path) -> None:
    other = ContentKey.generate()
    token = _license(
        vendor, other, audience=["acme/translate"], content_keys=[(other, "acme/translate")]
    )
    clock = FakeClock(NOW)
    with pytest.raises(NotLicensedError) as info:
        _guard(vendor, token, tmp_path, clock)  # an OCR service: audience="acme/ocr"
    assert info.value.reason == "wrong_audience"
    with pytest.raises(TypeError, match="audience"):
        Guard(token, TrustStore([vendor.public_key()]), state_dir=tmp_path / "s")
    # the sealed model is the product when modelseal.load builds the guard
    save_file({"w": np.ones(3, dtype=np.float32)}, str(tmp_path / "m.safetensors"))
    modelseal.seal(tmp_path / "m.safetensors", tmp_path / "ocr.mseal", model_id="acme/ocr")
    from modelseal.device import StaticSource

    dev = make_device()
    with pytest.raises(NotLicensedError) as info:
        modelseal.load(
            tmp_path / "ocr.mseal",
            license=token,
            trust=vendor.public_key(),
            framework="numpy",
            state_dir=tmp_path / "s2",
            source=StaticSource(list(dev.components), dev.environment),
            clock=lambda: NOW,
        )
    assert info.value.reason == "wrong_audience"


# --- item 5: the ASGI middleware holds when the app is mounted ----------------------


def _mounted_app(guard: Guard) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from modelseal.guard import LicenseASGIMiddleware

    async def ok(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    inner = Starlette(routes=[Route(p, ok) for p in ("/hd", "/ocr", "/healthz")])
    gated = LicenseASGIMiddleware(inner, guard, features={"/hd": "hd", "/ocr": "ocr"})
    return Starlette(routes=[Mount("/api", app=gated)])


def test_a_mounted_app_keeps_its_feature_gates(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from modelseal.guard import LicenseASGIMiddleware

    _, cek = model
    guard = _guard(vendor, _license(vendor, cek, features=["ocr"]), tmp_path, FakeClock(NOW))
    client = TestClient(_mounted_app(guard))
    assert client.get("/api/hd").status_code == 403  # the review got 200 here
    assert client.get("/api/ocr").status_code == 200
    assert client.get("/api/healthz").status_code == 200
    # a root_path set by the server (behind a proxy that strips a prefix)
    api = FastAPI()
    api.add_middleware(LicenseASGIMiddleware, guard=guard, features={"/hd": "hd"})

    @api.get("/hd")
    def hd() -> str:
        return "4k"

    assert TestClient(api, root_path="/svc").get("/hd").status_code == 403


def test_ambiguous_paths_fail_closed() -> None:
    from modelseal.guard.integrations import _PathPolicy, app_paths

    assert app_paths("/api/hd", "/api") == ["/hd", "/api/hd"]
    assert app_paths("/hd", "/api") == ["/hd"]  # a server that strips root_path itself
    assert app_paths("/api", "/api/") == ["/", "/api"]
    assert app_paths("/apis/hd", "/api") == ["/apis/hd"]
    policy = _PathPolicy(None, {"/hd": "hd", "/api/x": "x"}, ["/healthz"])  # type: ignore[arg-type]
    # "/api/x/hd" may be the app's "/x/hd" or, on an old server, "/api/x/hd":
    # both readings' features are required
    assert policy.decide(app_paths("/api/x/hd", "/api")) == (False, ["x"])
    assert policy.decide(app_paths("/api/hd", "/api")) == (False, ["hd"])
    assert policy.decide(app_paths("/api/healthz", "/api")) == (True, [])
    strict = _PathPolicy(None, {"/": "hd"}, ["/healthz"])  # type: ignore[arg-type]
    assert strict.decide(app_paths("/api/healthz", "/api")) == (False, ["hd"])


_SERVER_APP = textwrap.dedent(
    """
    import os
    from modelseal.crypto import load_public_key
    from modelseal.device import StaticSource
    from modelseal.guard import Guard
    from modelseal.license import TrustStore
    from tests.guard_core.test_red_team import _mounted_app
    from tests.license.conftest import NOW, make_device

    dev = make_device()
    guard = Guard(
        os.environ["T_TOKEN"], TrustStore([load_public_key(os.environ["T_PUB"].encode())]),
        state_dir=os.environ["T_STATE"], audience="acme/ocr", clock=lambda: NOW,
        source=StaticSource(list(dev.components), dev.environment),
    )
    app = _mounted_app(guard)
    """
)


def test_a_mounted_app_behind_a_root_path_in_a_real_server(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    import socket
    import time

    import httpx

    _, cek = model
    (tmp_path / "served_app.py").write_text(_SERVER_APP)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(SRC), str(ROOT)]),
        "T_TOKEN": _license(vendor, cek, features=["ocr"]),
        "T_PUB": vendor.public_key().to_pem().decode(),
        "T_STATE": str(tmp_path / "state"),
    }
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "served_app:app", "--host", "127.0.0.1"),
            *("--port", str(port), "--root-path", "/svc", "--log-level", "warning"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):  # bounded: up to 20 s for the server to come up
            try:
                httpx.get(f"{base}/api/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(f"{base}/api/hd").status_code == 403
        assert httpx.get(f"{base}/api/ocr").status_code == 200
        assert httpx.get(f"{base}/api/healthz").status_code == 200
    finally:
        server.kill()
        server.wait(timeout=10)


# --- item 10: the device cannot mint unlock codes ------------------------------------


def test_the_bound_device_cannot_mint_an_unlock_code(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    """The review's attack: open the unlock secret with the public API, mint a code."""
    from modelseal.guard.unlock import issue_unlock_code
    from modelseal.license import KeyDeliveryError, open_state_key, open_unlock_secret
    from modelseal.license.verify import license_kek

    _, cek = model
    clock = FakeClock(NOW)
    guard = _guard(vendor, _license(vendor, cek), tmp_path, clock, recheck_every=timedelta(0))
    lic, dev = guard.license, make_device()
    assert lic.claims.keys is not None and lic.claims.keys.unlock_secret is None
    with pytest.raises(KeyDeliveryError):
        open_unlock_secret(lic, dev)
    clock.now = NOW + timedelta(days=3)
    guard.check()
    clock.now = NOW + timedelta(days=1)  # locked: the attacker wants a code
    with pytest.raises(NotLicensedError):
        guard.check()
    assert lic.claims.device is not None and lic.claims.unlock is not None
    # everything the device can derive, tried as the code seed
    for candidate in (license_kek(lic, dev), open_state_key(lic, dev)):
        forged = issue_unlock_code(
            candidate, license_id=lic.claims.jti, device_id=lic.claims.device.device_id, serial=0
        )
        with pytest.raises(modelseal.IntegrityError):
            guard.unlock(forged)
    # the vendor's code (from the seed the license never carried) works
    from tests.guard_core.test_guard import _code

    guard.unlock(_code(lic, serial=0))
    guard.check()


def test_restoring_the_state_file_does_not_revive_a_used_code(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    from tests.guard_core.test_guard import _code

    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek)
    guard = _guard(vendor, token, tmp_path, clock, recheck_every=timedelta(0))
    state_file = guard.audit_path.with_name(f"{guard.license.claims.jti}.state")
    saved = state_file.read_bytes()
    code = _code(guard.license, serial=3)
    guard.unlock(code)
    with pytest.raises(modelseal.ModelsealError):
        guard.unlock(code)  # single use
    for _ in range(5):  # and the wrong-code limiter fills up
        with pytest.raises(modelseal.ModelsealError):
            guard.unlock(_code(guard.license, serial=4, seed=bytes(32)))
    state_file.write_bytes(saved)  # the state from before the code was used
    fresh = _guard(vendor, token, tmp_path, clock, verify=False)
    with pytest.raises(modelseal.ModelsealError) as info:
        fresh.unlock(code)
    assert getattr(info.value, "reason", None) == "state_tampered"
    with pytest.raises(NotLicensedError) as refused:
        _guard(vendor, token, tmp_path, clock)
    assert refused.value.reason == "state_tampered"


def test_an_unbound_license_refuses_a_load_not_the_guard(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    path, cek = model
    token = _license(vendor, cek, request=None, content_keys=[])
    guard = _guard(vendor, token, tmp_path, FakeClock(NOW))
    with pytest.raises(NotLicensedError) as info:
        guard.load(path, framework="numpy")  # was an AssertionError
    assert info.value.reason == "key_unavailable"
    guard.check("ocr")


_BUSY_SCRIPT = textwrap.dedent(
    """
    import sys
    from modelseal.crypto import load_public_key
    from modelseal.device import StaticSource
    from modelseal.guard import Guard, NotLicensedError
    from modelseal.license import TrustStore
    from tests.license.conftest import NOW, make_device

    token, pub, state_dir = sys.argv[1:4]
    dev = make_device()
    guard = Guard(token, TrustStore([load_public_key(pub.encode())]), state_dir=state_dir,
                  audience="acme/ocr", source=StaticSource(list(dev.components), dev.environment),
                  clock=lambda: NOW, reserve_calls=1)
    print("ready", flush=True)
    while True:  # every call reserves: an append and a state write, back to back
        guard.check()
        try:
            guard.check("hd")
        except NotLicensedError:
            pass
    """
)


def test_kill_9_mid_write_is_never_a_tamper_lock(
    vendor: PrivateKey, model: Model, tmp_path: Path
) -> None:
    import signal
    import time

    _, cek = model
    clock = FakeClock(NOW)
    token = _license(vendor, cek, max_calls=1_000_000)
    _guard(vendor, token, tmp_path, clock).close()
    args = [token, vendor.public_key().to_pem().decode(), str(tmp_path / "state")]
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{ROOT}"}
    for delay in (0.05, 0.2, 0.45):
        busy = subprocess.Popen(
            [sys.executable, "-c", _BUSY_SCRIPT, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert busy.stdout is not None and busy.stdout.readline().strip() == "ready"
            time.sleep(delay)
        finally:
            busy.send_signal(signal.SIGKILL)
            busy.wait(timeout=30)
        guard = _guard(vendor, token, tmp_path, clock)  # no false tamper verdict
        assert verify_audit(guard.audit_path, expected_head=_anchor(guard)).ok
        guard.check()
        guard.close()
