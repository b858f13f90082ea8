"""Rate limits on the API (docs/controlplane.md, "Rate limits"): 429 with Retry-After."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modelseal.controlplane.ratelimit import MAX_BUCKETS, TokenBuckets
from tests.controlplane.conftest import Api


class Steps:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_one_per_refill() -> None:
    clock = Steps()
    buckets = TokenBuckets(60, clock=clock)  # 60 a minute: one a second
    assert [buckets.take("k") for _ in range(60)] == [0.0] * 60
    wait = buckets.take("k")
    assert 0.99 <= wait <= 1.0
    assert buckets.take("other") == 0.0  # another key has its own budget
    clock.now += 0.5
    assert 0.49 <= buckets.take("k") <= 0.5  # a refused request costs nothing
    clock.now += 0.5
    assert buckets.take("k") == 0.0
    assert buckets.take("k") > 0.0
    clock.now += 3600
    assert [buckets.take("k") for _ in range(60)] == [0.0] * 60  # never more than the burst
    assert buckets.take("k") > 0.0


def test_buckets_are_bounded() -> None:
    buckets = TokenBuckets(1, clock=Steps())
    for n in range(MAX_BUCKETS + 10):
        buckets.take(f"a:{n}")
    assert len(buckets._buckets) == MAX_BUCKETS
    assert buckets.take("a:0") == 0.0  # evicted first: starts full again


@pytest.fixture
def limited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("MODELSEAL_RATE_LIMIT_CREDENTIAL", "5")
    monkeypatch.setenv("MODELSEAL_RATE_LIMIT_ADDRESS", "3")
    from tests.controlplane import conftest

    gen = conftest.api.__wrapped__(tmp_path, None)  # type: ignore[attr-defined]
    yield next(gen)
    with pytest.raises(StopIteration):
        next(gen)


def _status(client: TestClient, method: str, path: str, **kw: object) -> int:
    return client.request(method, path, **kw).status_code  # type: ignore[arg-type]


def test_admin_calls_are_limited_per_token_and_anonymous_ones_per_address(limited: Api) -> None:
    a = limited.as_("a")
    assert [_status(a, "GET", "/v1/plans") for _ in range(5)] == [200] * 5
    over = a.get("/v1/plans")
    assert over.status_code == 429 and over.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(over.headers["Retry-After"]) <= 12
    # the other vendor's token has its own budget
    assert _status(limited.as_("b"), "GET", "/v1/plans") == 200
    # heartbeats and health probes are never limited here
    anonymous = TestClient(a.app, base_url="http://127.0.0.1")
    for _ in range(5):
        assert _status(anonymous, "GET", "/healthz") == 200
        assert _status(anonymous, "POST", "/v1/heartbeat", content=b"{}") == 422
    # activation without a credential: per address
    body = {"license_key": "AAAAA-AAAAA-AAAAA-AAAAA-AAAAA", "request": {}}
    codes = [_status(anonymous, "POST", "/v1/activate", json=body) for _ in range(4)]
    assert codes[:3] == [422] * 3 and codes[3] == 429
