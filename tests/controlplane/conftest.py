"""Fixtures for the license server: both databases, an in-process app, real processes.

PostgreSQL cases run when ``MODELSEAL_TEST_DATABASE_URL`` is set (CI sets
it); each creates its own database ``modelseal_test_<random>`` and drops it.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from safetensors.numpy import save_file

import modelseal
from modelseal.crypto import ContentKey, b64url
from modelseal.device import ActivationRequest, Environment
from modelseal.device.request import RequestComponent
from modelseal.license.licensekey import activation_salt

PG_URL = os.environ.get("MODELSEAL_TEST_DATABASE_URL")

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from modelseal.controlplane.settings import Settings


def _pg_admin_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """None means the default (SQLite in the data dir); else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    if not PG_URL:
        pytest.skip("MODELSEAL_TEST_DATABASE_URL is not set (CI sets it): PostgreSQL case skipped")
    import psycopg

    name = f"modelseal_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(
    *args: str, env: dict[str, str] | None = None, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "modelseal", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"modelseal {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
    return proc


@dataclass
class Server:
    url: str
    token: str
    token_file: Path
    data_dir: Path
    database_url: str | None
    proc: subprocess.Popen[bytes]
    port: int

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=60,
        )

    def kill(self) -> None:
        # the whole process group: uvicorn's workers die with it, as on a power cut
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def db_args(data_dir: Path, database_url: str | None) -> list[str]:
    args = ["--data-dir", str(data_dir)]
    if database_url:
        args += ["--database-url", database_url]
    return args


def start_server(
    data_dir: Path, database_url: str | None, *, port: int | None = None, workers: int = 1
) -> subprocess.Popen[bytes]:
    port = port or free_port()
    log = open(data_dir / f"server-{port}.log", "ab")  # noqa: SIM115 (the process owns it)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelseal",
            "controlplane",
            *db_args(data_dir, database_url),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError((data_dir / f"server-{port}.log").read_text())
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the control plane did not become ready within 60 s")


@pytest.fixture
def server(tmp_path: Path, database_url: str | None) -> Iterator[Server]:
    data_dir = tmp_path / "cp"
    token_file = tmp_path / "owner.token"
    run_cli(
        "controlplane",
        "init",
        *db_args(data_dir, database_url),
        "--vendor",
        "acme",
        "--token-out",
        str(token_file),
    )
    port = free_port()
    proc = start_server(data_dir, database_url, port=port)
    srv = Server(
        f"http://127.0.0.1:{port}",
        token_file.read_text().strip(),
        token_file,
        data_dir,
        database_url,
        proc,
        port,
    )
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def sealed_model(tmp_path: Path) -> tuple[Path, ContentKey, Path]:
    save_file({"w": np.arange(12, dtype=np.float32)}, str(tmp_path / "m.safetensors"))
    key = modelseal.seal(tmp_path / "m.safetensors", tmp_path / "m.mseal", model_id="acme/ocr")
    (tmp_path / "m.safetensors").unlink()
    key.save(tmp_path / "m.key")
    return tmp_path / "m.mseal", key, tmp_path / "m.key"


def fake_request(
    license_key: str,
    *,
    seed: int | None = None,
    label: str = "box",
    kinds: tuple[str, ...] = ("dmi.product_uuid", "disk.root_serial", "os.hostname"),
) -> ActivationRequest:
    """A well-formed request for ``license_key`` from a made-up device (no scrypt: fast).

    The server never sees component values, only digests and secrets, so
    random ones are indistinguishable from a real device's. Weights are the
    issuer's table's (weights 3 + 2 + 1 by default).
    """
    from modelseal.device.fingerprint import COMPONENT_KINDS

    rng = np.random.default_rng(seed)
    comps = sorted(
        (
            RequestComponent(
                kind=kind,
                strength=COMPONENT_KINDS[kind].strength,
                weight=COMPONENT_KINDS[kind].weight,
                digest=b64url(rng.bytes(32)),
                secret=b64url(rng.bytes(32)),
            )
            for kind in kinds
        ),
        key=lambda c: (c.kind, c.digest),
    )
    return ActivationRequest(
        version=2,
        label=label,
        nonce=b64url(rng.bytes(16)),
        created_at="2026-12-01T00:00:00Z",
        salt=b64url(activation_salt(license_key)),
        environment=Environment(virtualization="none", details=(), platform="linux"),
        components=tuple(comps),
    )


def request_json(req: ActivationRequest) -> dict[str, Any]:
    return req.to_json()


def trust_of(client: Any, tmp_path: Path) -> Any:
    """The vendor's trust set as the server exports it (a trust file), loaded."""
    from modelseal.license import TrustStore

    path = tmp_path / f"trust-{secrets.token_hex(4)}.json"
    resp = client.get("/v1/keys/trust")
    assert resp.status_code == 200, resp.text
    path.write_bytes(resp.content)
    return TrustStore.load(path)


def catalog(
    client: Any,
    key: ContentKey,
    *,
    max_devices: int | None = 5,
    heartbeat: int | None = 3600,
    kind: str = "subscription",
) -> dict[str, str]:
    """Plan, customer and model; returns their ids."""
    plan = client.post(
        "/v1/plans",
        json={
            "name": f"pro-{secrets.token_hex(3)}",
            "kind": kind,
            "days": None if kind == "perpetual" else 30,
            "features": ["ocr"],
            "max_devices": max_devices,
            "heartbeat_interval": heartbeat,
            "threshold": 4,
        },
    )
    assert plan.status_code == 201, plan.text
    cust = client.post("/v1/customers", json={"name": f"hospital-{secrets.token_hex(3)}"})
    assert cust.status_code == 201, cust.text
    model = client.post(
        "/v1/models",
        json={
            "model_id": "acme/ocr",
            "key_id": key.key_id,
            "content_key": b64url(key.raw()),
        },
    )
    assert model.status_code in (201, 409), model.text
    if model.status_code == 409:
        model_id = client.get("/v1/models").json()[0]["id"]
    else:
        model_id = model.json()["id"]
    return {"plan": plan.json()["id"], "customer": cust.json()["id"], "model": model_id}


def order(client: Any, ids: dict[str, str], **headers: str) -> dict[str, Any]:
    resp = client.post(
        "/v1/orders",
        json={
            "customer": ids["customer"],
            "plan": ids["plan"],
            "models": [ids["model"]],
        },
        headers=headers,
    )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


@dataclass
class Api:
    client: TestClient
    settings: Settings
    tokens: dict[str, str]

    def as_(self, who: str) -> TestClient:
        self.client.headers["Authorization"] = f"Bearer {self.tokens[who]}"
        return self.client


def _vendor(settings: Settings, name: str) -> str:
    from modelseal.controlplane import db
    from modelseal.controlplane.secretbox import SecretBox, load_or_create_master_key
    from modelseal.controlplane.services.vendors import init_vendor

    engine = db.make_engine(settings)
    box = SecretBox(load_or_create_master_key(settings.master_key_path))
    with db.transaction(db.session_factory(engine)) as session:
        _, token = init_vendor(session, box, name=name, kty="ed25519")
    engine.dispose()
    return token


@pytest.fixture
def api(tmp_path: Path, database_url: str | None) -> Iterator[Api]:
    """The app in process with two vendors, ``a`` (acme) and ``b`` (globex)."""
    from fastapi.testclient import TestClient

    from modelseal.controlplane import db
    from modelseal.controlplane.app import create_app
    from modelseal.controlplane.settings import Settings

    settings = Settings(
        data_dir=tmp_path / "cp", database_url=database_url, public_url="http://127.0.0.1:9"
    )
    engine = db.make_engine(settings)
    db.migrate(engine)
    engine.dispose()
    tokens = {"a": _vendor(settings, "acme"), "b": _vendor(settings, "globex")}
    app = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield Api(client, settings, tokens)
    app.state.cp.engine.dispose()


@pytest.fixture
def allow_private_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests deliver to receivers on 127.0.0.1, which the server refuses by default (red
    team #12, finding 7): the operator's setting that allows it, set before the app."""
    monkeypatch.setenv("MODELSEAL_WEBHOOK_ALLOW_PRIVATE", "1")
