"""The operator console: calls in progress with their live text and the caller's history, the
ticket form (corrections, errors in words, direct answer, merge of a duplicate) and the form
for requests without a call — through the app on both backends."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlmodel import col

from core.db import saved_id
from hotline.calls import intake as call_intake
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, TranscribedBy
from tests.telephony.fakes import FakeCall
from tests.web.test_pages_signin import _csrf, people, sign_in  # noqa: F401 (fixture)
from tests.web.test_tickets import WATER_CUT, post
from tickets.models import Status, Ticket, Urgency


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


# ---------------------------------------------------------------- the transcript race

LEAK_WORDS = "人民路12号自来水管爆了，水一直往外冒"


def _call_ticket(client, session, clock, call_id: str) -> int:
    """A call answered and ended with its ticket still waiting for the caller's words."""
    call = FakeCall(call_id=call_id, remote_number="13800004444")
    ticket = call_intake.open_ticket(
        session, call=call, now=clock.now(), settings=client.app.state.settings
    )
    session.flush()
    _call(session, clock, call_id=call_id, number="13800004444", text="", ended=True)
    session.execute(
        update(CallRecord).where(col(CallRecord.call_id) == call_id).values(ticket_id=ticket.id)
    )
    session.commit()
    return saved_id(ticket)


def _transcript_arrives(client, session, clock, call_id: str) -> None:
    call_intake.attach_transcript(
        session,
        call_id=call_id,
        text=LEAK_WORDS,
        transcribed_by=TranscribedBy.offline,
        now=clock.now(),
        settings=client.app.state.settings,
    )
    session.commit()


def _save(client, ticket_id: int, form_html: str, description: str):
    return client.post(
        f"/console/tickets/{ticket_id}",
        data={"csrf_token": _csrf(form_html), "description": description, "urgency": "urgent"},
    )


def _description(session, ticket_id: int) -> str:
    session.expire_all()
    return session.get(Ticket, ticket_id).description


def test_given_the_form_saved_before_the_transcript_then_the_placeholder_is_replaced(
    client, people, session, clock
):
    ticket_id = _call_ticket(client, session, clock, "race-1@pbx")
    sign_in(client, "operator")
    form = client.get(f"/console/tickets/{ticket_id}").text
    assert 'id="call-words"' in form and f"sse:ticket-{ticket_id}" in form  # waiting, live
    assert _save(client, ticket_id, form, call_intake.PLACEHOLDER).status_code == 200

    _transcript_arrives(client, session, clock, "race-1@pbx")

    assert LEAK_WORDS in _description(session, ticket_id)
    words = client.get(f"/console/tickets/{ticket_id}/words", headers={"HX-Request": "true"})
    assert words.status_code == 200 and "<html" not in words.text
    assert "最终转写已送达" in words.text or "final transcript has arrived" in words.text
    assert 'data-description="' in words.text and LEAK_WORDS in words.text
    assert "hx-get" not in words.text  # it has arrived: no more refreshing


def test_given_the_transcript_before_the_save_then_the_stale_placeholder_does_not_overwrite_it(
    client, people, session, clock
):
    ticket_id = _call_ticket(client, session, clock, "race-2@pbx")
    sign_in(client, "operator")
    form = client.get(f"/console/tickets/{ticket_id}").text  # opened while transcribing

    _transcript_arrives(client, session, clock, "race-2@pbx")
    saved = _save(client, ticket_id, form, call_intake.PLACEHOLDER)

    assert saved.status_code == 200
    assert LEAK_WORDS in _description(session, ticket_id)
    assert session.get(Ticket, ticket_id).urgency == Urgency.urgent  # the rest was saved


def test_given_the_operator_wrote_the_description_then_the_transcript_keeps_to_the_ticket_page(
    client, people, session, clock
):
    ticket_id = _call_ticket(client, session, clock, "race-3@pbx")
    sign_in(client, "operator")
    form = client.get(f"/console/tickets/{ticket_id}").text
    mine = "来电人反映人民路水管爆裂，需尽快抢修"
    _save(client, ticket_id, form, mine)

    _transcript_arrives(client, session, clock, "race-3@pbx")

    assert _description(session, ticket_id) == mine
    page = client.get(f"/tickets/{ticket_id}").text
    assert mine in page and LEAK_WORDS in page  # the caller's own words, beside the operator's


def test_given_the_ticket_answered_before_the_transcript_then_the_words_still_reach_it(
    client, people, session, clock
):
    ticket_id = _call_ticket(client, session, clock, "race-4@pbx")
    sign_in(client, "operator")
    form = client.get(f"/console/tickets/{ticket_id}").text
    client.post(
        f"/console/tickets/{ticket_id}/answer",
        data={"csrf_token": _csrf(form), "answer": "已告知供水热线电话"},
    )

    _transcript_arrives(client, session, clock, "race-4@pbx")

    session.expire_all()
    assert session.get(Ticket, ticket_id).status == Status.closed
    assert LEAK_WORDS in client.get(f"/tickets/{ticket_id}").text


# ---------------------------------------------------------------- refusals in words


def test_given_an_english_operator_when_the_merge_is_refused_then_it_is_said_in_message_ids(
    client, auth, people
):
    closed = post(client, auth("operator"), description="请问社保卡怎么补办").json()["ticket"]
    other = post(client, auth("operator"), description="社保卡补办流程").json()["ticket"]
    sign_in(client, "operator")
    page = client.get("/").text
    client.post("/account/locale", data={"locale": "en", "csrf_token": _csrf(page)})
    token = _csrf(client.get(f"/console/tickets/{closed['id']}").text)
    client.post(
        f"/console/tickets/{closed['id']}/answer", data={"csrf_token": token, "answer": "网点补办"}
    )

    refused = client.post(
        f"/console/tickets/{other['id']}/merge",
        data={"csrf_token": token, "parent_id": str(closed["id"])},
    )
    assert refused.status_code == 409
    assert "That ticket cannot take this one" in refused.text
    assert "cannot merge into" not in refused.text  # the service's developer text

    again = client.post(
        f"/console/tickets/{closed['id']}/answer", data={"csrf_token": token, "answer": "再答"}
    )
    assert again.status_code == 409
    assert "The direct answer is not possible while the ticket is “Closed”." in again.text
    assert "close_at_intake" not in again.text
