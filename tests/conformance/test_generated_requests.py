"""Property-based requests generated from the gateway's own /openapi.json (schemathesis).

Bounded for the suite (a few examples per operation, a few seconds); docs/reliability.md has the
longer run. Whatever the generated request, the gateway never answers 5xx and every error is the
OpenAI envelope of SPEC §5. The provider path parameter is pinned to a configured provider so the
requests reach the loopback upstreams instead of stopping at provider_not_found.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import orjson
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from tests.conftest import GATEWAY_KEY, PROVIDERS
from tests.support.gateway import GatewayServer

EXAMPLES = int(os.environ.get("RELIABILITY_SCHEMA_EXAMPLES", "8"))


def check(case: schemathesis.Case[Any], gateway: GatewayServer, statuses: Counter[int]) -> None:
    if "provider" in (case.path_parameters or {}):
        generated = str(case.path_parameters["provider"])
        case.path_parameters["provider"] = PROVIDERS[len(generated) % len(PROVIDERS)]
    response = case.call(
        base_url=gateway.url, headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=10
    )
    status = response.status_code
    statuses[status] += 1
    assert status < 500, (status, case.path, response.content[:300])
    if status >= 400:
        content_type = response.headers.get("content-type", [""])
        assert content_type[0].startswith("application/json"), (case.path, content_type)
        error = orjson.loads(response.content)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str)
        assert error["message"]


def test_generated_requests_never_5xx(gateway: GatewayServer) -> None:
    schema = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) >= 7
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case[Any]) -> None:
            check(case, gateway, statuses)

        run()
    # Both answers and errors were produced, so both branches of the check really ran.
    assert sum(statuses.values()) >= len(operations) * min(EXAMPLES, 2), statuses
    assert statuses[200], statuses
    assert sum(v for k, v in statuses.items() if k >= 400), statuses
