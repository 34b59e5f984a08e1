"""A bounded schemathesis run over the local server's OpenAPI: no input, valid or not, may produce a 5xx.

Bounded (a few examples per operation, no deadline) so it takes seconds and runs in every CI job; it is not marked
``slow`` on purpose.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from paygentic_costs.server import create_app

app = create_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_makes_the_server_fail(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": "Bearer sk_schemathesis"}, checks=[not_a_server_error])
