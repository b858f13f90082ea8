"""How long a write waits while an auditor verifies a long audit chain (red team #12, #3).

On SQLite every transaction takes the database write lock (BEGIN IMMEDIATE).
Before the fix ``GET /v1/audit/verify`` walked the whole chain inside the
request's transaction, so every writer waited for the walk; now it reads in
short transactions of its own. This writes N records of the shape a flood
of refused logins left, starts a verify, and 0.3 s into it times an owner's
``POST /v1/customers``; then the same POST with no verify running.

    PYTHONPATH=src python bench/audit_verify_lock.py 30000
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from modelseal.controlplane import db
from modelseal.controlplane.app import create_app
from modelseal.controlplane.models import Vendor
from modelseal.controlplane.secretbox import SecretBox, load_or_create_master_key
from modelseal.controlplane.services import audit
from modelseal.controlplane.services.vendors import init_vendor
from modelseal.controlplane.settings import Settings


def main(n: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="verify-lock-"))
    settings = Settings(data_dir=tmp / "cp", public_url="http://127.0.0.1:9", webhook_worker=False)
    engine = db.make_engine(settings)
    db.migrate(engine)
    box = SecretBox(load_or_create_master_key(settings.master_key_path))
    with db.transaction(db.session_factory(engine)) as session:
        _, owner_token = init_vendor(session, box, name="acme", kty="ed25519")
    engine.dispose()
    app = create_app(settings)
    st = app.state.cp
    t = time.perf_counter()
    with st.sessions() as s, s.begin():
        vid = s.execute(select(Vendor.id).where(Vendor.name == "acme")).scalar_one()
        audit.bind(s, actor={"kind": "anonymous", "username": "alice"}, address="203.0.113.9")
        for _ in range(n):
            audit.note(
                s,
                vid,
                "user.auth_failed",
                {"target": {"kind": "user", "id": "usr_x"}, "username": "alice"},
                reason="locked",
            )
    print(f"{n} records written in {time.perf_counter() - t:.1f} s")

    def client() -> TestClient:
        c = TestClient(app, base_url="http://127.0.0.1")
        c.headers["Authorization"] = f"Bearer {owner_token}"
        return c

    auditor_token = client().post("/v1/tokens", json={"name": "aud", "role": "auditor"})
    auditor = client()
    auditor.headers["Authorization"] = f"Bearer {auditor_token.json()['token']}"
    writer = client()
    out: dict[str, tuple[int, object, float]] = {}

    def verify() -> None:
        t0 = time.perf_counter()
        r = auditor.get("/v1/audit/verify")
        out["verify"] = (r.status_code, r.json().get("records"), time.perf_counter() - t0)

    th = threading.Thread(target=verify)
    th.start()
    time.sleep(0.3)  # the verify is under way (this is a measurement, not a test)
    t1 = time.perf_counter()
    r = writer.post("/v1/customers", json={"name": "Initech"})
    waited = time.perf_counter() - t1
    th.join()
    status, records, took = out["verify"]
    print(f"verify: {status}, {records} records, {took:.2f} s")
    print(f"write during verify: {r.status_code}, {waited:.2f} s")
    t1 = time.perf_counter()
    r = writer.post("/v1/customers", json={"name": "Initech2"})
    print(f"same write, no verify running: {r.status_code}, {time.perf_counter() - t1:.2f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30000)
