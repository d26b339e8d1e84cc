"""GET /api/v1/acd/figures: supervisors and administrators only; the figures of hand-made
calls per quarter, hour and operator with their definitions; today by default; bad ranges
refused in words. (The figures themselves are checked in tests/hotline/test_acd_figures.py.)"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from accounts.models import AgentState, AgentStateChange
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome

SH = ZoneInfo("Asia/Shanghai")
URL = "/api/v1/acd/figures"


def L(h: int, m: int = 0, s: int = 0) -> datetime:
    return datetime(2026, 11, 27, h, m, s, tzinfo=SH).astimezone(UTC)


def _call(session, arrived, wait, outcome, agent=None, talk=None):
    queued = arrived + timedelta(seconds=5)
    left = queued + timedelta(seconds=wait)
    session.add(
        CallRecord(
            call_id=secrets.token_hex(8),
            direction=CallDirection.INBOUND,
            arrived_at=arrived,
            answered_at=arrived,
            ended_at=left + timedelta(seconds=talk or 0),
            queued_at=queued,
            queue_left_at=left,
            queue_outcome=outcome,
            agent_user_id=agent,
            agent_answered_at=left if agent else None,
            created_at=arrived,
            updated_at=arrived,
        )
    )


@pytest.fixture
def calls(session, world):
    """09:10 answered by the operator in 12 s (talk 100 s), 09:20 answered in 20 s (talk
    60 s), 09:50 abandoned after 2 s (short); the operator signed in 09:00–09:40."""
    operator = world.staff["operator"].id
    _call(session, L(9, 10), 12, QueueOutcome.agent, operator, talk=100)
    _call(session, L(9, 20), 20, QueueOutcome.agent, operator, talk=60)
    _call(session, L(9, 50), 2, QueueOutcome.abandoned)
    for at, before, after in (
        (L(9), AgentState.signed_out, AgentState.ready),
        (L(9, 40), AgentState.ready, AgentState.signed_out),
    ):
        session.add(
            AgentStateChange(
                user_id=operator, from_state=before, to_state=after, at=at, source="console"
            )
        )
    session.commit()
    return operator


def test_supervisors_get_quarters_hours_and_operators_with_definitions(client, auth, calls):
    quarters = client.get(
        URL,
        params={"from": "2026-11-27T09:00:00+08:00", "to": "2026-11-27T10:00:00+08:00",
                "interval": "15min"},
        headers=auth("supervisor"),
    )  # fmt: skip
    hour = client.get(
        URL,
        params={"from": "2026-11-27T01:00:00Z", "to": "2026-11-27T02:00:00Z", "agent": calls},
        headers=auth("admin"),
    )

    assert quarters.status_code == 200, quarters.text
    body = quarters.json()
    assert body["time_zone"] == "Asia/Shanghai" and body["interval"] == "15min"
    assert "short abandons" in body["definitions"]["service_level"]
    assert [i["figures"]["offered"] for i in body["intervals"]] == [1, 1, 0, 1]
    assert body["intervals"][0]["start"].startswith("2026-11-27T01:00:00")
    total = body["total"]
    # 3 queued, 1 short abandon: 1 of 2 within 15 s; 2 of 2 within 30 s.
    assert (total["queued"], total["answered"], total["short_abandoned"]) == (3, 2, 1)
    assert total["service_level"] == pytest.approx(0.5)
    assert total["service_level_30s"] == pytest.approx(1.0)
    assert total["asa_s"] == pytest.approx(16.0) and total["p90_wait_s"] == 20
    (operator,) = body["agents"]
    assert operator["username"] == "operator" and operator["calls"]["answered"] == 2
    assert operator["signed_in_s"] == pytest.approx(40 * 60)
    # Signed in 40 min, on no call by state (the calls were hand-made): occupancy 0.
    assert operator["occupancy"] == pytest.approx(0.0)
    assert hour.status_code == 200, hour.text
    assert len(hour.json()["intervals"]) == 1
    assert hour.json()["total"]["service_level"] == pytest.approx(0.5)
    assert [a["user_id"] for a in hour.json()["agents"]] == [calls]


def test_without_a_range_it_is_today_until_now(client, auth, calls):
    # The test clock stands at 10:00 on 27 November, Beijing time.
    today = client.get(URL, params={"interval": "day"}, headers=auth("supervisor")).json()

    assert today["start"].startswith("2026-11-26T16:00:00")
    assert today["end"].startswith("2026-11-27T02:00:00")
    assert today["total"]["offered"] == 3


@pytest.mark.parametrize("who", ["operator", "dispatcher"])
def test_operators_and_dispatchers_may_not_see_the_figures(client, auth, world, who):
    assert client.get(URL, headers=auth(who)).status_code == 403


def test_a_unit_handler_and_a_stranger_may_not_either(client, auth, world):
    handler = next(name for name in world.tokens if "." in name)

    assert client.get(URL, headers=auth(handler)).status_code == 403
    assert client.get(URL).status_code == 401


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"from": "2026-11-27T10:00:00+08:00", "to": "2026-11-27T09:00:00+08:00"}, "after"),
        ({"from": "9999-12-31T00:00:00Z", "to": "9999-12-31T12:00:00Z"}, "between 1971"),
        ({"from": "1900-01-01T00:00:00Z", "to": "1900-01-02T00:00:00Z"}, "between 1971"),
        ({"from": "2026-01-01T00:00:00+08:00", "to": "2026-11-27T00:00:00+08:00"}, "92 days"),
        (
            {
                "from": "2026-10-01T00:00:00+08:00",
                "to": "2026-11-27T00:00:00+08:00",
                "interval": "15min",
            },
            "3000 intervals",
        ),  # fmt: skip
    ],
)
def test_a_range_that_cannot_be_answered_is_refused_in_words(client, auth, world, params, words):
    answer = client.get(URL, params=params, headers=auth("supervisor"))

    assert answer.status_code == 422
    assert words in answer.text


@pytest.mark.parametrize(
    "params",
    [{"interval": "week"}, {"from": "2026-11-27T09:00:00"}, {"from": "12345"}, {"agent": "0"}],
)
def test_bad_parameters_are_refused(client, auth, world, params):
    assert client.get(URL, params=params, headers=auth("supervisor")).status_code == 422


def test_the_answer_is_documented(client):
    schema = client.get("/api/v1/openapi.json")
    if schema.status_code == 404:
        schema = client.get("/openapi.json")
    paths = schema.json()["paths"]

    answer = paths["/api/v1/acd/figures"]["get"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/AcdFigures")
    assert "service_level" in schema.json()["components"]["schemas"]["CallFigures"]["properties"]
