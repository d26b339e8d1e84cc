"""The missed-calls page (漏话回拨): its count in the top bar, the list, an attempt recorded
(no answer keeps the caller listed, reached takes them off), a refusal in words, the audit."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlmodel import col

from accounts.models import AuditEntry
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome
from tests.web.test_pages_signin import _csrf, people, sign_in  # noqa: F401 (fixture)

NUMBER = "13800009999"


def test_an_operator_calls_back_a_caller_who_hung_up_in_the_queue(client, people, session, clock):
    at = clock.now() - timedelta(minutes=5)
    session.add(
        CallRecord(
            call_id="lost-1@edge",
            direction=CallDirection.INBOUND,
            caller_number=NUMBER,
            arrived_at=at,
            queued_at=at,
            queue_left_at=at + timedelta(seconds=42),
            queue_outcome=QueueOutcome.abandoned,
            created_at=at,
            updated_at=at,
        )
    )
    session.commit()
    sign_in(client, "operator")
    page = client.get("/calls/missed")
    assert page.status_code == 200
    assert f'href="tel:{NUMBER}"' in page.text and "42 s" in page.text
    assert 'href="/calls/missed"' in client.get("/console").text  # in the top bar
    csrf = _csrf(page.text)

    tried = client.post(
        "/calls/missed", data={"csrf_token": csrf, "number": NUMBER, "outcome": "no_answer"}
    )
    assert tried.status_code == 200 and f'data-number="{NUMBER}"' in tried.text
    reached = client.post(
        "/calls/missed", data={"csrf_token": csrf, "number": NUMBER, "outcome": "reached"}
    )
    assert f'data-number="{NUMBER}"' not in reached.text
    again = client.post(
        "/calls/missed", data={"csrf_token": csrf, "number": NUMBER, "outcome": "reached"}
    )
    assert again.status_code == 409 and "没有该号码的待回拨漏话" in again.text
    audit = session.scalars(
        select(AuditEntry)
        .where(col(AuditEntry.action) == "missed_call_back")
        .order_by(col(AuditEntry.id))
    ).all()
    assert [(a.outcome, a.detail["outcome"]) for a in audit] == [
        ("ok", "no_answer"),
        ("ok", "reached"),
        ("refused", "reached"),
    ]
