"""A call an operator took shows both speakers' turns (市民 / 话务员): on the console's ticket
view while the call runs (refreshed on the call's live event) and once final, in the
console's calls list, and on the ticket page — masked there for a confidential caller as the
fields are. A robot's call shows the caller's words as before. Through the app on both
backends."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

from sqlalchemy import update
from sqlmodel import col

from core.db import saved_id
from hotline.calls import intake as call_intake
from hotline.live import call_key
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, TranscribedBy
from tests.telephony.fakes import FakeCall
from tests.web.test_pages_signin import people, sign_in  # noqa: F401 (fixture)

CALLER_SAYS = "人民路12号自来水管爆了"
OPERATOR_SAYS = "请问您的具体位置在哪里"
CALLER_AGAIN = "就在小区北门口"
TURNS = [
    {"speaker": "caller", "start_s": 0.4, "end_s": 2.6, "text": CALLER_SAYS},
    {"speaker": "operator", "start_s": 3.1, "end_s": 4.9, "text": OPERATOR_SAYS},
    {"speaker": "caller", "start_s": 65.5, "end_s": 67.0, "text": CALLER_AGAIN},
]
CITIZEN = ("市民", "Citizen")  # the label's msgid until the catalogue has its Chinese


def _operator_call(
    client, session, clock, call_id: str, *, ended: bool, turns=TURNS, **ticket
) -> int:
    """A call operator 7 took, its ticket a draft; ``ended`` with the final words attached."""
    settings = client.app.state.settings
    call = FakeCall(call_id=call_id, remote_number=ticket.pop("phone", "13800005555"))
    opened = call_intake.open_ticket(session, call=call, now=clock.now(), settings=settings)
    session.flush()
    now = clock.now()
    session.add(
        CallRecord(
            call_id=call_id,
            direction=CallDirection.INBOUND,
            caller_number=call.remote_number,
            arrived_at=now - timedelta(seconds=80),
            answered_at=now - timedelta(seconds=70),
            ended_at=now if ended else None,
            ticket_id=opened.id,
            agent_user_id=7,
            live_text=" ".join(t["text"] for t in turns if t["speaker"] == "caller"),
            live_seq=5,
            dialogue=turns,
            created_at=now,
            updated_at=now,
        )
    )
    if ticket:
        opened.sqlmodel_update(ticket)
        session.add(opened)
    session.commit()
    if ended:
        call_intake.attach_transcript(
            session,
            call_id=call_id,
            text=f"{CALLER_SAYS} {CALLER_AGAIN}",
            transcribed_by=TranscribedBy.live,
            now=clock.now(),
            settings=settings,
        )
        session.commit()
    return saved_id(opened)


def _labels(html: str) -> list[str]:
    return re.findall(r'<span class="who">([^<]+)</span>', html)


def _said(html: str) -> list[str]:
    return re.findall(r'<span class="said">([^<]+)</span>', html)


def test_given_a_call_in_progress_then_the_console_ticket_view_shows_the_turns_live(
    client, people, session, clock
):
    ticket_id = _operator_call(client, session, clock, "op-live@pbx", ended=False)
    sign_in(client, "operator")

    form = client.get(f"/console/tickets/{ticket_id}").text

    words = form.split('id="call-words"')[1].split("</section>")[0]
    assert _said(words) == [CALLER_SAYS, OPERATOR_SAYS, CALLER_AGAIN]
    labels = _labels(words)
    assert labels[0] in CITIZEN and labels[1] == "话务员" and labels[2] == labels[0]
    assert "0:00" in words and "0:03" in words and "1:05" in words  # from the answer
    # Refreshed on the ticket's events and on the call's live event while it runs.
    assert f"sse:call-{call_key('op-live@pbx')} throttle:500ms" in words
    fragment = client.get(f"/console/tickets/{ticket_id}/words", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert _said(fragment.text) == [CALLER_SAYS, OPERATOR_SAYS, CALLER_AGAIN]


def test_given_the_call_grew_then_the_words_fragment_shows_the_new_turn(
    client, people, session, clock
):
    ticket_id = _operator_call(client, session, clock, "op-grow@pbx", ended=False, turns=TURNS[:1])
    sign_in(client, "operator")
    before = client.get(f"/console/tickets/{ticket_id}/words", headers={"HX-Request": "true"})
    assert _said(before.text) == [CALLER_SAYS]

    session.execute(
        update(CallRecord)
        .where(col(CallRecord.call_id) == "op-grow@pbx")
        .values(dialogue=TURNS[:2], live_seq=CallRecord.live_seq + 1)
    )
    session.commit()

    after = client.get(f"/console/tickets/{ticket_id}/words", headers={"HX-Request": "true"})
    assert _said(after.text) == [CALLER_SAYS, OPERATOR_SAYS]
    listed = client.get(f"/console/calls/dialogue?call={quote('op-grow@pbx')}")
    assert listed.status_code == 200 and "<html" not in listed.text
    assert _said(listed.text) == [CALLER_SAYS, OPERATOR_SAYS]
    assert client.get("/console/calls/dialogue?call=nobody").status_code == 404


def test_given_the_call_ended_then_the_console_and_the_ticket_page_keep_the_labelled_dialogue(
    client, people, session, clock
):
    ticket_id = _operator_call(client, session, clock, "op-done@pbx", ended=True)
    sign_in(client, "operator")

    form = client.get(f"/console/tickets/{ticket_id}").text
    words = form.split('id="call-words"')[1].split("</section>")[0]
    assert _said(words) == [CALLER_SAYS, OPERATOR_SAYS, CALLER_AGAIN]
    assert "hx-get" not in words  # final: nothing more to wait for
    page = client.get(f"/tickets/{ticket_id}").text
    assert _said(page) == [CALLER_SAYS, OPERATOR_SAYS, CALLER_AGAIN]
    labels = _labels(page)
    assert labels[0] in CITIZEN and labels[1] == "话务员"


def test_given_a_robot_call_then_the_caller_s_words_show_as_before(client, people, session, clock):
    ticket_id = _operator_call(client, session, clock, "robot@pbx", ended=True)
    session.execute(
        update(CallRecord)
        .where(col(CallRecord.call_id) == "robot@pbx")
        .values(dialogue=None, agent_user_id=None)
    )
    session.commit()
    sign_in(client, "operator")

    form = client.get(f"/console/tickets/{ticket_id}").text
    page = client.get(f"/tickets/{ticket_id}").text

    for html in (form, page):
        assert '<ol class="dialogue"' not in html and _labels(html) == []
        assert f"{CALLER_SAYS} {CALLER_AGAIN}" in html


def test_given_a_call_in_progress_then_the_calls_list_shows_its_turns(
    client, people, session, clock
):
    _operator_call(client, session, clock, "op-list@pbx", ended=False)
    sign_in(client, "operator")

    page = client.get("/console").text

    card = page.split('id="dialogue-' + call_key("op-list@pbx"))[1].split("</article>")[0]
    assert _said(card) == [CALLER_SAYS, OPERATOR_SAYS, CALLER_AGAIN]
    assert f'hx-trigger="sse:call-{call_key("op-list@pbx")} throttle:500ms"' in card


def test_given_a_confidential_caller_then_the_words_shown_to_a_handler_are_masked(
    client, people, session, clock
):
    said = [
        {"speaker": "caller", "start_s": 0.5, "end_s": 3.0, "text": "我叫李四，电话13812345678"},
        {"speaker": "operator", "start_s": 3.5, "end_s": 5.0, "text": "李四先生您好"},
    ]
    ticket_id = _operator_call(
        client,
        session,
        clock,
        "op-secret@pbx",
        ended=True,
        turns=said,
        phone="13812345678",
        caller_name="李四",
        confidential=True,
    )

    shown = call_intake.shown_words(session, ticket_id=ticket_id, mask_names=["李四"])

    [words] = shown
    assert [t["speaker"] for t in words.dialogue] == ["caller", "operator"]
    text = " ".join(t["text"] for t in words.dialogue) + str(words)
    assert "李四" not in text and "13812345678" not in text and "138****5678" in text
    sign_in(client, "operator")  # the centre sees who it is
    assert "李四先生您好" in client.get(f"/tickets/{ticket_id}").text
