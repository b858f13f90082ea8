"""Property-based API testing from the OpenAPI document: no input earns a 5xx.

Every operation gets a bounded number of generated requests (schemathesis
over hypothesis, positive and negative data: malformed, oversized, wrongly
typed) with a valid token; none may answer 5xx.
"""

from __future__ import annotations

import itertools
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.controlplane.conftest import Api

EXAMPLES = 6


def test_no_request_earns_a_server_error(api: Api) -> None:
    from modelseal.controlplane.platform.runtime import PlatformRuntime
    from tests.controlplane.platform.fakes import FakeBackend

    # the Platform area's deployments run on a fake backend here (no processes started)
    api.client.app.state.platform = PlatformRuntime(api.settings, backend=FakeBackend())  # type: ignore[attr-defined]
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    headers = {"Authorization": f"Bearer {api.tokens['a']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            run()
        except Unsatisfiable:
            # an operation with no input to break (GET /healthz) has no negative cases
            assert mode is GenerationMode.NEGATIVE, operation.label
