"""The gateway's Prometheus series."""

from __future__ import annotations

from modelseal import _prometheus


class GatewayMetrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        r = self.registry = _prometheus.new_registry()
        self.requests = Counter(
            "modelseal_gateway_requests",
            "Requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "modelseal_gateway_request_seconds",
            "Time from request to response headers (whole body when decrypting)",
            ["route"],
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
            ),
            registry=r,
        )
        self.refused = Counter(
            "modelseal_gateway_refused",
            "Requests refused before any upstream call (401 no_key/bad_key, 403, 404, 429)",
            ["reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "modelseal_gateway_upstream_errors",
            "Upstream failures (502 unreachable, 504 timeout)",
            ["route", "kind"],
            registry=r,
        )
        self.envelope_failures = Counter(
            "modelseal_gateway_envelope_failures",
            "Responses refused because their envelope did not open",
            ["route", "reason"],
            registry=r,
        )
        self.envelopes = Counter(
            "modelseal_gateway_envelopes_opened", "Envelopes decrypted", ["route"], registry=r
        )
        self.unwraps = Counter(
            "modelseal_gateway_sm2_unwraps",
            "SM2 decryptions of session keys (cache misses)",
            registry=r,
        )
        self.reloads = Counter(
            "modelseal_gateway_routes_reloads", "Routes file reloads", ["result"], registry=r
        )
        self.ratelimit_errors = Counter(
            "modelseal_gateway_ratelimit_backend_errors",
            "Rate-limit checks that failed open (Redis unreachable)",
            registry=r,
        )
