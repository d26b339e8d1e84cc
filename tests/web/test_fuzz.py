"""Schema-driven fuzzing of the whole JSON API (schemathesis): every operation, a bounded
number of deterministic examples each, valid and invalid, on both backends. No response may
be a 5xx, and each must be a status the operation documents, in the documented shape.

Each example runs in a savepoint that is rolled back afterwards, so one example cannot
change what the next sees (a fuzzed `POST /users/me/token` would otherwise revoke the token
every later request uses). That isolation is also why there are no stateful link chains:
the examples of one operation start from the same world."""

from __future__ import annotations

from collections.abc import Callable

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import Connection

from tests.factories import World

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
ADMIN_EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 8}
# A second, lighter pass as a unit's handler: the role checks and the narrower visibility
# take other branches (403s, 404s for other units' tickets).
HANDLER_EXAMPLES = {GenerationMode.POSITIVE: 4, GenerationMode.NEGATIVE: 3}

# Not fuzzed, and why:
SKIPPED = {
    # Streams for up to `timeout_s` while polling the call record: a hanging example, and
    # its only inputs are the call id (404 here) and the timeout, checked by test_calls_api.
    "GET /api/v1/calls/{call_id}/transcript/stream",
}


def fuzz(
    app, connection: Connection, headers: dict[str, str], examples: dict[GenerationMode, int]
) -> list[str]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    for result in schema.get_all_operations():
        # The app's own document: an operation schemathesis cannot read is a failure too.
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        if operation.label in SKIPPED:
            continue
        for mode, count in examples.items():

            @settings(
                max_examples=count,
                derandomize=True,
                database=None,
                deadline=None,
                # Whole-body fuzzing of large request models filters and generates a lot.
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:
                savepoint = connection.begin_nested()
                try:
                    case.call_and_validate(headers=headers, checks=CHECKS)
                finally:
                    savepoint.rollback()

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # every operation is reported
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    return failures


def test_given_an_admin_when_fuzzing_every_operation_then_no_5xx_and_every_response_documented(
    app, connection: Connection, world: World, auth: Callable[[str], dict[str, str]]
) -> None:
    failures = fuzz(app, connection, auth("admin"), ADMIN_EXAMPLES)
    assert not failures, "\n\n".join(failures)


def test_given_a_handler_when_fuzzing_every_operation_then_no_5xx_and_every_response_documented(
    app, connection: Connection, world: World, auth: Callable[[str], dict[str, str]]
) -> None:
    failures = fuzz(app, connection, auth("water.handler"), HANDLER_EXAMPLES)
    assert not failures, "\n\n".join(failures)
