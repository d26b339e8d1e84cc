"""A request that reaches the centre with no operator — the public site, Open311 — about the
same matter as an open ticket, through the app on both backends: the dispatcher finds it in
the merge candidates with the reason (same caller phone, same address or a similar text)
and a score, merges it (并单) or says it is another request; the web sender's lookup page
then follows the other ticket's progress and shows its approved reply (the other caller's
name masked), and Open311 reports the merged request closed with a note naming the request
that carries the work on (unless that one is confidential)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import col

from core.clock import FrozenClock
from core.db import saved_id
from core.settings import Settings
from dispatch import handling, review
from dispatch.models import Assignment, AssignmentRole
from hotline.open311 import clients
from tests.web.test_pages_queues import _ticket, staff  # noqa: F401
from tests.web.test_pages_signin import _csrf, sign_in
from tests.web.test_public_pages import _keys, _send, _track
from tickets.models import Status, Ticket
from web.app import create_app

V2 = "/open311/v2"
PHONE_TICKET = {  # an operator's ticket from a call: another caller, another address text
    "description": "幸福小区3号楼停水三天了，请尽快恢复供水",
    "caller_phone": "13900009999",
    "caller_name": "李四",
    "address": "幸福小区",
}
WAGES = {
    "service_code": "040101",
    "address_string": "榆阳区新建路8号工地",
    "description": "新建路工地拖欠农民工工资三个月",
    "phone": "13812340000",
}


@pytest.fixture
def app(session_factory, clock: FrozenClock, tmp_path):
    return create_app(
        settings=Settings(environment="test", data_dir=tmp_path),
        session_factory=session_factory,
        clock=clock,
    )


def _row(session, number: str) -> Ticket:
    session.expire_all()
    return session.scalars(select(Ticket).where(col(Ticket.number) == number)).one()


def _merge_rows(client) -> str:
    """The merge queue's rows (after the tabs, whose counts also hold numbers)."""
    return client.get("/queues/merge").text.split('id="rows"')[1]


def _candidates(html: str) -> str:
    return html.split('id="candidates"')[1]


def _reply(session, world, clock, ticket: Ticket, text: str) -> None:
    lead = session.scalars(
        select(Assignment).where(
            col(Assignment.ticket_id) == ticket.id, col(Assignment.role) == AssignmentRole.lead
        )
    ).one()
    unit = next(code for code, unit in world.units.items() if unit.id == lead.unit_id)
    handler = world.handlers[unit]
    handling.sign(session, assignment_id=lead.id, actor=handler, now=clock.now())
    handling.reply(session, assignment_id=lead.id, text=text, actor=handler, now=clock.now())
    review.review_reply(
        session,
        ticket_id=saved_id(ticket),
        approve=True,
        actor=world.staff["dispatcher"],
        now=clock.now(),
    )
    session.commit()


def test_given_a_web_request_like_an_open_call_then_merged_and_its_sender_follows_the_call(
    client, auth, staff, session, clock, world
):
    call = _ticket(client, auth, **PHONE_TICKET)["ticket"]
    clock.advance(timedelta(hours=2))
    # another phone, another address text: only the words say it is the same water cut
    number, code = _keys(_send(client).text)
    web = _row(session, number)
    assert web.channel == "web" and web.caller_phone != call["caller_phone"]

    sign_in(client, "dispatcher")
    listed = _merge_rows(client)
    assert number in listed and call["number"] in listed
    assert "相似" in listed.split(number)[1]  # the queue says why: a similar text
    page = client.get(f"/queues/merge/{web.id}")
    assert page.status_code == 200
    shown = _candidates(page.text)
    assert call["number"] in shown and 'class="badge reason-text"' in shown
    assert "reason-caller" not in shown and "reason-address" not in shown
    score = re.search(r'data-score="([0-9.]+)"', shown)
    assert score and 0.35 <= float(score.group(1)) <= 1

    done = client.post(
        f"/queues/merge/{web.id}",
        data={"csrf_token": _csrf(page.text), "parent_id": str(call["id"])},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert _row(session, number).status == Status.merged
    assert number not in _merge_rows(client)

    # the sender follows the call's ticket: its unit, then its approved reply
    tracked = _track(client, number, code=code)
    assert tracked.status_code == 200 and 'id="public-merged"' in tracked.text
    assert "处理中" in tracked.text or "办理中" in tracked.text
    _reply(session, world, clock, _row(session, call["number"]), "李四您好，已恢复供水")
    tracked = _track(client, number, code=code).text
    assert "已恢复供水" in tracked and "李*您好" in tracked and "李四" not in tracked
    assert 'name="satisfaction"' not in tracked  # the call's caller is the one called back


def test_given_an_open311_request_from_the_same_phone_then_suggested_then_dismissed(
    client, auth, staff, session, clock, world
):
    call = _ticket(client, auth, description="工地拖欠工资", caller_phone=WAGES["phone"])["ticket"]
    _, key = clients.issue(session, name="市民 App", actor="admin:test", now=clock.now())
    session.commit()
    posted = client.post(f"{V2}/requests.json", data={**WAGES, "api_key": key})
    assert posted.status_code == 201, posted.text
    number = posted.json()[0]["service_request_id"]
    filed = _row(session, number)

    sign_in(client, "dispatcher")
    page = client.get(f"/queues/merge/{filed.id}")
    shown = _candidates(page.text)
    assert call["number"] in shown and 'class="badge reason-caller"' in shown

    dismissed = client.post(
        f"/queues/merge/{filed.id}/dismiss",
        data={"csrf_token": _csrf(page.text), "other_id": str(call["id"])},
        follow_redirects=False,
    )
    assert dismissed.status_code == 303
    assert call["number"] not in _candidates(client.get(f"/queues/merge/{filed.id}").text)
    assert number not in _merge_rows(client)
    assert _row(session, number).status != Status.merged


@pytest.mark.parametrize("confidential", [False, True])
def test_given_an_open311_request_merged_then_closed_with_a_note_naming_the_other(
    client, auth, staff, session, clock, world, confidential
):
    call = _ticket(
        client,
        auth,
        description="新建路工地拖欠农民工工资",
        address=WAGES["address_string"],
        confidential=confidential,
    )["ticket"]
    _, key = clients.issue(session, name="市民 App", actor="admin:test", now=clock.now())
    session.commit()
    posted = client.post(f"{V2}/requests.json", data={**WAGES, "api_key": key})
    number = posted.json()[0]["service_request_id"]
    filed = _row(session, number)
    sign_in(client, "dispatcher")
    page = client.get(f"/queues/merge/{filed.id}")
    assert 'class="badge reason-address"' in _candidates(page.text)
    client.post(
        f"/queues/merge/{filed.id}",
        data={"csrf_token": _csrf(page.text), "parent_id": str(call["id"])},
        follow_redirects=False,
    )

    (found,) = client.get(f"{V2}/requests/{number}.json").json()
    assert found["status"] == "closed" and found["expected_datetime"] is None
    if confidential:
        assert found["status_notes"] == "与相同诉求的工单合并办理"
    else:
        assert found["status_notes"].startswith(f"与相同诉求的工单 {call['number']} 合并办理")
    xml = client.get(f"{V2}/requests/{number}.xml").text
    assert "<status>closed</status>" in xml and "合并办理" in xml
