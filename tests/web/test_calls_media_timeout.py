"""A bridged call the media timeout ended (disposition ``media_timeout``, issue 17) through the
API, on both backends: listed and filtered by its disposition, enumerated in the API's
schema, and still an answered (and handled) call in the contact-centre figures."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from core.settings import Settings
from telephony.endpoint import CallDirection, Disposition
from telephony.models import CallRecord, QueueOutcome
from web.app import create_app

SH = ZoneInfo("Asia/Shanghai")


def L(h: int, m: int = 0) -> datetime:
    return datetime(2026, 11, 27, h, m, tzinfo=SH).astimezone(UTC)


def _answered(session, call_id: str, arrived: datetime, disposition: Disposition, agent: int):
    """Queued 5 s after arriving, answered by ``agent`` 10 s later, 60 s on the line."""
    queued = arrived + timedelta(seconds=5)
    answered = queued + timedelta(seconds=10)
    session.add(
        CallRecord(
            call_id=call_id,
            direction=CallDirection.INBOUND,
            caller_number="13800000000",
            arrived_at=arrived,
            answered_at=arrived,
            ended_at=answered + timedelta(seconds=60),
            disposition=disposition,
            queued_at=queued,
            queue_left_at=answered,
            queue_outcome=QueueOutcome.agent,
            agent_user_id=agent,
            agent_answered_at=answered,
            created_at=arrived,
            updated_at=arrived,
        )
    )
    session.commit()


def test_given_a_call_ended_by_the_media_timeout_then_the_api_lists_and_filters_it(
    client, session, auth, world
):
    operator = world.staff["operator"].id
    _answered(session, "silent@pbx", L(9, 10), Disposition.MEDIA_TIMEOUT, operator)
    _answered(session, "talked@pbx", L(9, 20), Disposition.CALLER_HUNG_UP, operator)

    listed = client.get(
        "/api/v1/calls", params={"disposition": "media_timeout"}, headers=auth("operator")
    )
    one = client.get("/api/v1/calls/silent@pbx", headers=auth("operator"))

    assert listed.status_code == 200, listed.text
    assert [(c["call_id"], c["disposition"]) for c in listed.json()["items"]] == [
        ("silent@pbx", "media_timeout")
    ]
    assert one.status_code == 200 and one.json()["disposition"] == "media_timeout"


def test_the_api_schema_enumerates_the_media_timeout_disposition():
    document = create_app(settings=Settings(environment="test")).openapi()

    assert "media_timeout" in document["components"]["schemas"]["Disposition"]["enum"]


def test_given_a_call_ended_by_the_media_timeout_then_the_figures_count_it_answered(
    client, session, auth, world
):
    operator = world.staff["operator"].id
    _answered(session, secrets.token_hex(8), L(9, 10), Disposition.MEDIA_TIMEOUT, operator)
    _answered(session, secrets.token_hex(8), L(9, 20), Disposition.CALLER_HUNG_UP, operator)

    answer = client.get(
        "/api/v1/acd/figures",
        params={"from": "2026-11-27T09:00:00+08:00", "to": "2026-11-27T10:00:00+08:00",
                "interval": "hour"},
        headers=auth("supervisor"),
    )  # fmt: skip

    assert answer.status_code == 200, answer.text
    total = answer.json()["total"]
    # The operator took both calls within 15 s and both have ended: how one ended (the
    # caller's phone went silent) does not make it less answered.
    assert (total["queued"], total["answered"], total["answered_within_target"]) == (2, 2, 2)
    assert total["handled"] == 2 and total["service_level"] == 1.0
    assert "media_timeout" in answer.json()["definitions"]["answered"]
