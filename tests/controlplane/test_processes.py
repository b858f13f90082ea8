"""Real server processes on loopback: concurrency at the device limit, kill -9 mid-burst."""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from modelseal.crypto import ContentKey
from tests.controlplane.conftest import Server, catalog, fake_request, order, start_server


def test_100_concurrent_activations_of_a_5_device_license_activate_exactly_5(
    server: Server, content_key: ContentKey
) -> None:
    with server.client() as client:
        ids = catalog(client, content_key, max_devices=5)
        key = order(client, ids)["license_key"]
    bodies = [
        {"license_key": key, "request": fake_request(key, seed=i).to_json()} for i in range(100)
    ]

    def activate(body: dict[str, object]) -> int:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            return c.post("/v1/activate", json=body).status_code

    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(activate, bodies))
    assert codes.count(201) == 5, codes
    assert codes.count(403) == 95
    with server.client() as client:
        lic = client.get(f"/v1/licenses/{key}").json()
        assert lic["devices"] == 5
        assert len(client.get(f"/v1/licenses/{key}/devices").json()) == 5


def test_kill_9_during_a_burst_loses_no_acknowledged_license_and_duplicates_none(
    server: Server, content_key: ContentKey, tmp_path: Path
) -> None:
    with server.client() as client:
        ids = catalog(client, content_key)
    acknowledged: dict[str, str] = {}  # idempotency key -> license id
    attempts = [secrets.token_hex(8) for _ in range(120)]

    def place(idem: str) -> None:
        try:
            with httpx.Client(
                base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {server.token}"}
            ) as c:
                resp = c.post(
                    "/v1/orders",
                    headers={"Idempotency-Key": idem},
                    json={
                        "customer": ids["customer"],
                        "plan": ids["plan"],
                        "models": [ids["model"]],
                    },
                )
        except httpx.HTTPError:
            return  # the server died under us: not acknowledged
        if resp.status_code == 201:
            acknowledged[idem] = resp.json()["id"]

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(place, idem) for idem in attempts]
        deadline = time.monotonic() + 30
        while len(acknowledged) < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        server.kill()  # mid-burst
        for f in futures:
            f.result()
    assert 20 <= len(acknowledged) < len(attempts), len(acknowledged)

    server.proc = start_server(server.data_dir, server.database_url, port=server.port)
    with server.client() as client:
        listed = {lic["id"] for lic in client.get("/v1/licenses").json()}
        assert set(acknowledged.values()) <= listed  # nothing acknowledged was lost
        # every order retried (the client's answer to a crash) maps to one license only
        for idem in attempts:
            resp = client.post(
                "/v1/orders",
                headers={"Idempotency-Key": idem},
                json={
                    "customer": ids["customer"],
                    "plan": ids["plan"],
                    "models": [ids["model"]],
                },
            )
            assert resp.status_code == 201
            if idem in acknowledged:
                assert resp.json()["id"] == acknowledged[idem]
        final = client.get("/v1/licenses").json()
        assert len(final) == len(attempts)  # no duplicates
        assert client.get("/readyz").status_code == 200


def test_kill_9_during_concurrent_activations_loses_none_and_never_exceeds_the_seats(
    server: Server, content_key: ContentKey
) -> None:
    seats = 30
    with server.client() as client:
        ids = catalog(client, content_key, max_devices=seats)
        key = order(client, ids)["license_key"]
    bodies = [
        {"license_key": key, "request": fake_request(key, seed=1000 + i).to_json()}
        for i in range(70)
    ]
    acknowledged: dict[int, tuple[str, str]] = {}  # request -> (device record, license)

    def activate(i: int) -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                resp = c.post("/v1/activate", json=bodies[i])
        except httpx.HTTPError:
            return  # the server died under us: not acknowledged
        if resp.status_code == 201:
            acknowledged[i] = (resp.json()["device"], resp.json()["license"])

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(activate, i) for i in range(len(bodies))]
        deadline = time.monotonic() + 60
        while len(acknowledged) < 8 and time.monotonic() < deadline:
            time.sleep(0.005)
        server.kill()  # mid-burst
        for f in futures:
            f.result()
    assert 8 <= len(acknowledged) < seats, len(acknowledged)

    server.proc = start_server(server.data_dir, server.database_url, port=server.port)
    with server.client() as client:
        devices = {d["id"]: d for d in client.get(f"/v1/licenses/{key}/devices").json()}
        for record, _ in acknowledged.values():  # nothing acknowledged was lost
            assert devices[record]["status"] == "active"
        assert len(devices) <= seats
        # every device retries (the client's answer to a crash): an acknowledged one
        # gets its own seat and license back, and the seats fill to the limit, no further
        results = [client.post("/v1/activate", json=body) for body in bodies]
        for i, resp in enumerate(results):
            assert resp.status_code in (201, 403), resp.text
            if i in acknowledged:
                assert resp.status_code == 201 and resp.json()["reactivated"] is True
                assert (resp.json()["device"], resp.json()["license"]) == acknowledged[i]
        assert sum(r.status_code == 201 for r in results) == seats
        assert client.get(f"/v1/licenses/{key}").json()["devices"] == seats
        assert len(client.get(f"/v1/licenses/{key}/devices").json()) == seats
