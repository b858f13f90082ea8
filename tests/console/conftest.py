"""The console in process (TestClient) with a logged-in person per role, and helpers."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient

from tests.controlplane.conftest import _vendor, database_url

__all__ = ["database_url"]  # the fixture: SQLite, and PostgreSQL where CI gives one

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field on the page"
    return found.group(1)


@dataclass
class ConsoleUser:
    client: TestClient
    csrf: str
    totp: pyotp.TOTP
    password: str
    recovery: list[str]

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self.client.post(path, data={"csrf": self.csrf, **(data or {})}, **kw)

    def code(self) -> str:
        """A code for the next step: the console, like the API, takes each step once."""
        return self.totp.at(time.time() + 30)


@dataclass
class ConsoleApp:
    app: Any
    owner_token: str

    def client(self) -> TestClient:
        return TestClient(self.app, base_url="http://127.0.0.1", follow_redirects=False)

    def user(self, username: str, role: str) -> ConsoleUser:
        """Made with the owner's token; logs in at /console/login and enrols TOTP there."""
        api = self.client()
        made = api.post(
            "/v1/users",
            json={"username": username, "role": role},
            headers={"Authorization": f"Bearer {self.owner_token}"},
        )
        assert made.status_code == 201, made.text
        password = made.json()["password"]
        c = self.client()
        form = c.get("/console/login")
        assert form.status_code == 200
        resp = c.post(
            "/console/login",
            data={
                "csrf": csrf_of(form.text),
                "vendor": "acme",
                "username": username,
                "password": password,
            },
        )
        assert resp.status_code == 303 and resp.headers["location"] == "/console/totp", resp.text
        # before enrolment every page sends the person to enrol
        assert c.get("/console/licenses").headers["location"] == "/console/totp"
        start = c.get("/console/totp")
        scan = c.post("/console/totp", data={"csrf": csrf_of(start.text)})
        assert scan.status_code == 200, scan.text
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', scan.text)
        assert secret and 'src="data:image/svg+xml;base64,' in scan.text
        totp = pyotp.TOTP(secret.group(1))
        done = c.post(
            "/console/totp/confirm", data={"csrf": csrf_of(scan.text), "code": totp.now()}
        )
        assert done.status_code == 200, done.text
        codes = re.findall(r"<li><code>([0-9a-f-]+)</code></li>", done.text)
        assert len(codes) == 10
        home = c.get("/console/")
        assert home.status_code == 200, home.text
        return ConsoleUser(c, csrf_of(home.text), totp, password, codes)


@pytest.fixture
def console(tmp_path: Path, database_url: str | None) -> Iterator[ConsoleApp]:
    from modelseal.controlplane import db
    from modelseal.controlplane.app import create_app
    from modelseal.controlplane.settings import Settings

    settings = Settings(
        data_dir=tmp_path / "cp", database_url=database_url, node_port_range="30000-30009"
    )
    engine = db.make_engine(settings)
    db.migrate(engine)
    engine.dispose()
    token = _vendor(settings, "acme")
    app = create_app(settings)
    with TestClient(app):
        yield ConsoleApp(app, token)
    app.state.cp.engine.dispose()
