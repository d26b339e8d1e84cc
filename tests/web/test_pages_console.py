"""The operator console: calls in progress with their live text and the caller's history, the
ticket form (corrections, errors in words, direct answer, merge of a duplicate) and the form
for requests without a call — through the app on both backends."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import func, select

from telephony.endpoint import CallDirection
from telephony.models import CallRecord
from tests.web.test_pages_signin import _csrf, people, sign_in  # noqa: F401 (fixture)
from tests.web.test_tickets import WATER_CUT, post
from tickets.models import Status, Ticket


def _call(
    session, clock, *, call_id: str, number: str, text: str, ended: bool = False, ticket_id=None
):
    now = clock.now()
    session.add(
        CallRecord(
            call_id=call_id,
            direction=CallDirection.INBOUND,
            caller_number=number,
            arrived_at=now - timedelta(seconds=40),
            answered_at=now - timedelta(seconds=38),
            ended_at=now - timedelta(seconds=5) if ended else None,
            ticket_id=ticket_id,
            live_text=text,
            live_seq=3,
            created_at=now,
            updated_at=now,
        )
    )
    session.commit()


def test_given_calls_then_the_console_shows_them_with_text_and_history(
    client, auth, people, session, clock
):
    earlier = post(client, auth("operator"), description=WATER_CUT, caller_phone="13800001111")
    earlier = earlier.json()["ticket"]
    _call(session, clock, call_id="live-1@pbx", number="13800001111", text="我们小区又停水了")
    _call(
        session,
        clock,
        call_id="done-1@pbx",
        number="13900002222",
        text="路灯坏了",
        ended=True,
        ticket_id=earlier["id"],
    )
    sign_in(client, "operator")
    page = client.get("/console").text
    assert "我们小区又停水了" in page and "13800001111" in page
    assert earlier["number"] in page  # the caller's history, and the ended call's ticket
    assert f'href="/console/tickets/{earlier["id"]}"' in page
    fragment = client.get("/console/calls", headers={"HX-Request": "true"}).text
    assert fragment.lstrip().startswith('<div id="calls"') and "<html" not in fragment


def test_given_a_ticket_then_the_form_corrects_it_and_errors_are_words(client, auth, people):
    ticket = post(client, auth("operator"), description=WATER_CUT).json()["ticket"]
    sign_in(client, "operator")
    form = client.get(f"/console/tickets/{ticket['id']}")
    assert form.status_code == 200 and ticket["number"] in form.text and "派单" in form.text
    token = _csrf(form.text)
    bad = client.post(
        f"/console/tickets/{ticket['id']}",
        data={"csrf_token": token, "description": "停水", "caller_phone": "not a phone"},
    )
    assert bad.status_code == 422 and "格式不正确" in bad.text
    saved = client.post(
        f"/console/tickets/{ticket['id']}",
        data={
            "csrf_token": token,
            "description": "人民路小区停水两天",
            "address": "榆阳区人民路12号",
            "request": "尽快恢复供水",
            "request_type": "complaint",
            "urgency": "urgent",
            "occurred_at": "2026-11-26T08:00",
        },
    )
    assert saved.status_code == 200 and "已保存" in saved.text
    read = client.get(f"/api/v1/tickets/{ticket['id']}", headers=auth("operator")).json()
    assert read["address"] == "榆阳区人民路12号" and read["urgency"] == "urgent"
    assert read["occurred_at"].startswith("2026-11-26T00:00")  # 08:00 in Shanghai


def test_given_a_direct_answer_then_closed_at_intake(client, auth, people):
    ticket = post(client, auth("operator"), description="请问社保卡丢了怎么补办").json()["ticket"]
    sign_in(client, "operator")
    token = _csrf(client.get(f"/console/tickets/{ticket['id']}").text)
    empty = client.post(f"/console/tickets/{ticket['id']}/answer", data={"csrf_token": token})
    assert empty.status_code == 422
    done = client.post(
        f"/console/tickets/{ticket['id']}/answer",
        data={"csrf_token": token, "answer": "携带身份证到任一社保网点补办"},
    )
    assert "已直接答复" in done.text
    status = client.get(f"/api/v1/tickets/{ticket['id']}", headers=auth("operator")).json()
    assert status["status"] in ("closed", Status.closed.value)


def test_given_a_duplicate_then_it_is_suggested_and_merged_with_one_click(client, auth, people):
    first = post(client, auth("operator"), description=WATER_CUT, caller_phone="13800001111")
    second = post(
        client, auth("operator"), description=WATER_CUT + "，快点", caller_phone="13800001111"
    )
    first, second = first.json()["ticket"], second.json()["ticket"]
    sign_in(client, "operator")
    form = client.get(f"/console/tickets/{second['id']}").text
    assert first["number"] in form and "同一来电人" in form and "内容相似" in form
    merged = client.post(
        f"/console/tickets/{second['id']}/merge",
        data={"csrf_token": _csrf(form), "parent_id": str(first["id"])},
    )
    assert "已并单" in merged.text
    child = client.get(f"/api/v1/tickets/{second['id']}", headers=auth("operator")).json()
    assert child["status"] == "merged" and child["parent_id"] == first["id"]


def test_given_a_walk_in_then_one_ticket_however_often_posted(client, people, session):
    sign_in(client, "operator")
    page = client.get("/console/new").text
    key = re.search(r'name="submission" value="([^"]+)"', page).group(1)
    data = {
        "csrf_token": _csrf(page),
        "submission": key,
        "channel": "walk_in",
        "caller_phone": "13700003333",
        "description": WATER_CUT,
        "request_type": "help",
        "urgency": "normal",
    }
    before = session.scalar(select(func.count()).select_from(Ticket))
    first = client.post("/console/new", data=data)
    again = client.post("/console/new", data=data)
    assert first.status_code == again.status_code == 200 and "工单已创建" in first.text
    assert session.scalar(select(func.count()).select_from(Ticket)) == before + 1
    missing = client.post("/console/new", data={**data, "submission": "other", "description": ""})
    assert missing.status_code == 422 and "此项必填" in missing.text


def test_given_a_handler_then_the_console_is_not_theirs(client, people):
    sign_in(client, "water.handler")
    assert client.get("/console").status_code == 403
