"""The supervisors' wallboard: for supervisors and administrators only (and in their
navigation bar), refreshed over the page's live stream (topics calls and agents), and
showing the queue now, today's figures and one row per operator from stored calls and
states."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from accounts.models import AgentState, AgentStateChange, AgentStatus, NotReadyReason, User
from accounts.signin import set_password
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome
from tests.web.test_pages_signin import PASSWORD, people, sign_in  # noqa: F401 (fixture)

SH = ZoneInfo("Asia/Shanghai")
HX = {"HX-Request": "true"}


def L(h: int, m: int = 0, s: int = 0) -> datetime:
    return datetime(2026, 11, 27, h, m, s, tzinfo=SH).astimezone(UTC)


def add_call(session, arrived, *, wait=None, outcome=None, agent=None, talk=None, wrap=None):
    """A call queued 5 s after it arrived; without ``wait`` it is still waiting."""
    queued = arrived + timedelta(seconds=5)
    left = queued + timedelta(seconds=wait) if wait is not None else None
    answered = left if outcome == QueueOutcome.agent else None
    session.add(
        CallRecord(
            call_id=secrets.token_hex(8),
            direction=CallDirection.INBOUND,
            arrived_at=arrived,
            answered_at=arrived,
            ended_at=(answered + timedelta(seconds=talk)) if answered and talk else left,
            queued_at=queued,
            queue_left_at=left,
            queue_outcome=outcome,
            agent_user_id=agent,
            agent_answered_at=answered,
            wrap_up_s=wrap,
            created_at=arrived,
            updated_at=arrived,
        )
    )


def staff_the_morning(session, world) -> tuple[int, int]:
    """The clock stands at 10:00. Operator: signed in 08:00, on a call since 09:58, two calls
    answered today (in 10 s and 20 s, 120 s talk + 30 s wrap-up each). Admin (as a second
    operator): on a break since 09:30, signed in since 09:00. Two calls wait since 09:59:20
    and 09:59:45; one abandon after 3 s (short), one after 40 s, one overflow."""
    operator, admin = world.staff["operator"].id, world.staff["admin"].id
    session.add(
        AgentStatus(user_id=operator, state=AgentState.on_call, extension="1001", since=L(9, 58))
    )
    session.add(
        AgentStatus(
            user_id=admin,
            state=AgentState.not_ready,
            reason=NotReadyReason.break_,
            extension="1002",
            since=L(9, 30),
        )
    )
    s = AgentState
    for user_id, at, before, after, reason in (
        (operator, L(8), s.signed_out, s.ready, None),
        (operator, L(9, 58), s.ready, s.on_call, None),
        (admin, L(9), s.signed_out, s.ready, None),
        (admin, L(9, 30), s.ready, s.not_ready, NotReadyReason.break_),
    ):
        session.add(
            AgentStateChange(
                user_id=user_id,
                from_state=before,
                to_state=after,
                reason=reason,
                at=at,
                source="console",
            )
        )
    add_call(
        session, L(8, 30), wait=10, outcome=QueueOutcome.agent, agent=operator, talk=120, wrap=30
    )
    add_call(
        session, L(9, 0), wait=20, outcome=QueueOutcome.agent, agent=operator, talk=120, wrap=30
    )
    add_call(session, L(9, 10), wait=3, outcome=QueueOutcome.abandoned)
    add_call(session, L(9, 20), wait=40, outcome=QueueOutcome.abandoned)
    add_call(session, L(9, 40), wait=60, outcome=QueueOutcome.overflowed)
    add_call(session, L(9, 59, 15))  # queued 09:59:20: 40 s by 10:00
    add_call(session, L(9, 59, 40))
    session.commit()
    return operator, admin


@pytest.fixture
def supervisor(session, people, clock):
    user = session.scalars(select(User).where(User.username == "supervisor")).one()
    set_password(session, user_id=user.id, password=PASSWORD, now=clock.now())
    session.commit()
    return user


def test_supervisors_and_admins_see_it_and_operators_do_not(client, people, supervisor):
    sign_in(client, "operator")
    assert 'href="/wallboard"' not in client.get("/console").text
    assert client.get("/wallboard").status_code == 403
    assert client.get("/wallboard/board", headers=HX).status_code == 403

    client.cookies.clear()
    sign_in(client, "supervisor")
    page = client.get("/wallboard")

    assert page.status_code == 200
    assert 'href="/wallboard"' in page.text and "/static/css/wallboard.css" in page.text
    assert re.search(
        r'sse-connect="/live\?topics=calls,agents&(amp;)?last_event_id=t\d+\.e\d+"', page.text
    )
    assert 'id="wb-bell" hidden hx-trigger="sse:calls, sse:agents"' in page.text
    assert 'hx-trigger="board-due, sse:hello, every 15s"' in page.text
    assert client.get("/static/css/wallboard.css").status_code == 200


def test_an_empty_centre_shows_dashes_not_errors(client, people, supervisor):
    sign_in(client, "supervisor")
    board = client.get("/wallboard/board", headers=HX)

    assert board.status_code == 200
    assert 'data-waiting="0"' in board.text and 'data-longest=""' in board.text
    assert (
        'data-share=""' in board.text and "当前没有话务员签入坐席" in board.text
    )  # nobody signed in


def test_the_board_shows_the_queue_today_and_each_operator(client, people, supervisor, session):
    operator, admin = staff_the_morning(session, people)
    sign_in(client, "admin")
    board = client.get("/wallboard/board", headers=HX).text

    # The queue: two waiting, the first since 09:59:20 (40 s), over the 15 s target.
    assert 'data-waiting="2"' in board and 'data-longest="40"' in board
    assert 'class="wb-tile wb-alert" id="wb-longest"' in board
    # Today: 5 queued calls ended or waiting = 7 queued; 1 short abandon left out: 1 of 6
    # answered within 15 s.
    assert 'data-share="0.1667"' in board and "6 通中 1 通" in board  # "1 of 6 calls"
    assert 'data-abandoned="2" data-short="1"' in board and 'data-overflowed="1"' in board
    assert 'data-state="on_call" data-count="1"' in board
    assert 'data-state="not_ready" data-count="1"' in board
    assert 'data-signed-in="2"' in board
    # Operator: 2 calls, handle 150 s each; signed in 08:00–10:00, on a call 2 min of it.
    row = board.split(f'data-agent="{operator}"', 1)[1].split("</tr>", 1)[0]
    assert 'data-calls="2"' in row and "2:30" in row
    assert 'data-elapsed="120"' in row  # on the call since 09:58
    assert 'data-occupancy="0.0167"' in row  # 120 s / 7200 s
    # Admin: on break since 09:30, which is not available time: 0 of 30 min.
    row = board.split(f'data-agent="{admin}"', 1)[1].split("</tr>", 1)[0]
    assert "小休" in row and 'data-occupancy="0.0000"' in row


def test_the_board_reads_in_chinese(client, people, supervisor, session):
    staff_the_morning(session, people)
    sign_in(client, "supervisor")
    client.post(
        "/account/locale",
        data={"locale": "zh_CN", "csrf_token": _token(client), "next": "/wallboard"},
    )
    page = client.get("/wallboard").text

    assert 'lang="zh-CN"' in page
    assert 'data-waiting="2"' in page


def _token(client) -> str:
    from tests.web.test_pages_signin import _csrf

    return _csrf(client.get("/wallboard").text)
