"""The dispatcher's and supervisor's pages through the app, on both backends: the queues and
their counts, the dispatch form with the rules' suggestion and its reason, redispatch that
needs a reason, reviewing returns and replies, callbacks (dissatisfied reopens), extension
decisions (the deadline moves), merging duplicates, and the escalation board; every step in
the audit, success and refusal; other roles kept out. The browser test drives the same
pages in Chromium (test_pages_queues_browser.py)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import col

from accounts.models import AuditEntry, User
from accounts.signin import set_password
from dispatch import escalation
from dispatch.models import Assignment, AssignmentRole, AssignmentStatus, Escalation
from tests.web.test_pages_signin import PASSWORD, _csrf, sign_in
from tests.web.test_tickets import WATER_CUT, post
from tickets.models import Status, Ticket

UNROUTED = "路灯不亮"  # no rule of tests.factories routes it


@pytest.fixture
def staff(session, world, clock):
    """Passwords for the centre's staff and the water and housing handlers."""
    for username in ("operator", "dispatcher", "supervisor", "admin", "water.handler"):
        user = session.scalars(select(User).where(User.username == username)).one()
        set_password(session, user_id=user.id, password=PASSWORD, now=clock.now())
    session.commit()
    return world


def _ticket(client, auth, description: str = UNROUTED, **fields) -> dict:
    response = post(client, auth("operator"), description=description, **fields)
    assert response.status_code == 201, response.text
    return response.json()


def _form(client, path: str, **fields):
    page = client.get(path)
    assert page.status_code == 200, page.text
    return client.post(
        path, data={"csrf_token": _csrf(page.text), **fields}, follow_redirects=False
    )


def _audit(session, action: str) -> list[AuditEntry]:
    session.expire_all()
    return list(session.scalars(select(AuditEntry).where(col(AuditEntry.action) == action)))


def _ticket_row(session, ticket_id: int) -> Ticket:
    session.expire_all()
    return session.get(Ticket, ticket_id)


def _lead(session, ticket_id: int) -> Assignment:
    session.expire_all()
    return session.scalars(
        select(Assignment)
        .where(
            col(Assignment.ticket_id) == ticket_id,
            col(Assignment.role) == AssignmentRole.lead,
            col(Assignment.status).in_([AssignmentStatus.dispatched, AssignmentStatus.signed]),
        )
        .order_by(col(Assignment.id).desc())
    ).first()


# ---------------------------------------------------------------- queues and dispatch


def test_given_unrouted_ticket_when_dispatched_from_the_queue_then_count_drops_and_audited(
    client, auth, staff, session
):
    created = _ticket(client, auth)["ticket"]
    sign_in(client, "dispatcher")
    overview = client.get("/queues")
    assert overview.status_code == 200 and "待派单" in overview.text
    queue = client.get("/queues/manual")
    assert created["number"] in queue.text
    assert f'href="/dispatch/{created["id"]}"' in queue.text
    assert f'href="/tickets/{created["id"]}"' in queue.text
    counts = client.get("/nav/counts")
    assert re.search(r'id="nav-count-queues"[^>]*>1<', counts.text)

    form = client.get(f"/dispatch/{created['id']}")
    assert "未命中任何规则" in form.text  # the suggestion's reason, in words
    done = client.post(
        f"/dispatch/{created['id']}",
        data={
            "csrf_token": _csrf(form.text),
            "lead_unit_code": "WATER",
            "co_unit_codes": ["HOUSING"],
        },
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith("/queues/manual?done=dispatched")
    after = client.get(done.headers["location"])
    assert f"工单 {created['number']} 已派单" in after.text
    assert created["number"] not in after.text.split('role="status"')[1].split("</p>", 1)[1]
    assert re.search(r'id="nav-count-queues"[^>]*>0<', client.get("/nav/counts").text)
    assert _ticket_row(session, created["id"]).status == Status.dispatched
    [entry] = _audit(session, "ticket.dispatch")
    assert entry.outcome == "ok" and entry.target == f"ticket:{created['id']}"
    assert entry.detail == {"lead_unit": "WATER", "co_units": ["HOUSING"]}


def test_given_routed_ticket_then_form_shows_the_rule_and_its_words(client, auth, staff):
    created = _ticket(client, auth, WATER_CUT)["ticket"]
    sign_in(client, "dispatcher")
    form = client.get(f"/dispatch/{created['id']}")
    assert "改派" in form.text  # already with a unit: a re-dispatch
    assert "<mark>停水</mark>" in form.text
    assert re.search(r'<option value="WATER" selected>', form.text)


def test_given_dispatched_ticket_when_redispatched_without_reason_then_refused_in_words(
    client, auth, staff, session
):
    created = _ticket(client, auth, WATER_CUT)["ticket"]
    sign_in(client, "dispatcher")
    refused = _form(client, f"/dispatch/{created['id']}", lead_unit_code="HOUSING")
    assert refused.status_code == 400
    assert "改派须填写原因" in refused.text and 'aria-invalid="true"' in refused.text
    assert _audit(session, "ticket.redispatch")[0].outcome == "refused"
    both = _form(
        client,
        f"/dispatch/{created['id']}",
        lead_unit_code="HOUSING",
        co_unit_codes="HOUSING",
        reason="x",
    )
    assert both.status_code == 400 and "主办单位不能同时为协办单位" in both.text
    done = _form(
        client, f"/dispatch/{created['id']}", lead_unit_code="HOUSING", reason="属住建职责"
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith(f"/dispatch/{created['id']}?done=redispatched")
    page = client.get(done.headers["location"])
    assert "已改派" in page.text
    lead = _lead(session, created["id"])
    assert lead.unit_id == staff.units["HOUSING"].id


def test_given_handler_or_operator_then_queues_are_not_theirs(client, auth, staff):
    created = _ticket(client, auth)["ticket"]
    sign_in(client, "water.handler")
    assert client.get("/queues").status_code == 403
    assert client.get("/escalations").status_code == 403
    assert client.get(f"/dispatch/{created['id']}").status_code == 403
    client.cookies.clear()
    sign_in(client, "operator")
    assert client.get("/queues/manual").status_code == 403
    assert client.get(f"/dispatch/{created['id']}").status_code == 200  # the API lets them


def test_given_post_without_csrf_token_then_refused(client, auth, staff):
    created = _ticket(client, auth)["ticket"]
    sign_in(client, "dispatcher")
    response = client.post(f"/dispatch/{created['id']}", data={"lead_unit_code": "WATER"})
    assert response.status_code == 403


def test_given_two_tickets_then_due_first_puts_the_very_urgent_one_first(client, auth, staff):
    first = _ticket(client, auth)["ticket"]
    second = _ticket(client, auth, urgency="very_urgent")["ticket"]
    sign_in(client, "dispatcher")
    due = client.get("/queues/manual").text
    assert due.index(second["number"]) < due.index(first["number"])
    newest = client.get("/queues/manual?sort=newest", headers={"HX-Request": "true"}).text
    assert "<html" not in newest  # only the rows block
    assert newest.index(second["number"]) < newest.index(first["number"])
    unknown = client.get("/queues/nothing", headers={"Accept": "text/html"})
    assert unknown.status_code == 400 and "Traceback" not in unknown.text


def test_given_more_than_a_page_then_the_queue_pages_on(client, auth, staff):
    numbers = [_ticket(client, auth)["ticket"]["number"] for _ in range(26)]
    sign_in(client, "dispatcher")
    first = client.get("/queues/manual")
    assert first.text.count('class="button') >= 25 and "page=2" in first.text
    second = client.get("/queues/manual?page=2")
    assert numbers[-1] in second.text and "page=1" in second.text and "page=3" not in second.text
    assert numbers[-1] not in first.text  # due first: the longest waiting first


# ---------------------------------------------------------------- reviews


def _returned(client, auth, session) -> dict:
    body = _ticket(client, auth, WATER_CUT)
    water = next(a for a in body["assignments"] if a["role"] == "lead")
    response = client.post(
        f"/api/v1/assignments/{water['id']}/return",
        headers=auth("water.handler"),
        json={"reason_code": "wrong_mandate", "reason": "小区内部管网归物业"},
    )
    assert response.status_code == 200, response.text
    return body["ticket"]


def test_given_return_when_redispatched_with_reason_then_the_new_unit_has_it(
    client, auth, staff, session
):
    ticket = _returned(client, auth, session)
    sign_in(client, "dispatcher")
    queue = client.get("/queues/returns")
    assert ticket["number"] in queue.text and "小区内部管网归物业" in queue.text
    page = client.get(f"/queues/returns/{ticket['id']}")
    assert "职能不符" in page.text
    no_reason = _form(
        client,
        f"/queues/returns/{ticket['id']}",
        decision="redispatch",
        lead_unit_code="HOUSING",
    )
    assert no_reason.status_code == 400 and "改派须填写原因" in no_reason.text
    done = _form(
        client,
        f"/queues/returns/{ticket['id']}",
        decision="redispatch",
        lead_unit_code="HOUSING",
        reason="物业管网归住建",
    )
    assert done.status_code == 303 and "done=redispatched" in done.headers["location"]
    assert _lead(session, ticket["id"]).unit_id == staff.units["HOUSING"].id
    assert ticket["number"] not in client.get("/queues/returns").text.split("</h1>")[1]


def test_given_return_when_upheld_then_back_to_the_unit(client, auth, staff, session):
    ticket = _returned(client, auth, session)
    sign_in(client, "dispatcher")
    done = _form(client, f"/queues/returns/{ticket['id']}", decision="uphold", reason="属供水")
    assert done.status_code == 303 and "done=upheld" in done.headers["location"]
    assert _ticket_row(session, ticket["id"]).status == Status.dispatched
    again = _form(client, f"/queues/returns/{ticket['id']}", decision="uphold", reason="again")
    assert again.status_code == 409 and "没有" not in again.text.split("<main")[0]
    assert _audit(session, "ticket.uphold_return")[-1].outcome == "refused"


def _replied(client, auth, session) -> dict:
    body = _ticket(client, auth, WATER_CUT)
    water = next(a for a in body["assignments"] if a["role"] == "lead")
    headers = auth("water.handler")
    client.post(f"/api/v1/assignments/{water['id']}/sign", headers=headers)
    response = client.post(
        f"/api/v1/assignments/{water['id']}/reply", headers=headers, json={"text": "已恢复供水"}
    )
    assert response.status_code == 200, response.text
    return body["ticket"]


def test_given_reply_when_approved_then_callback_dissatisfied_reopens(client, auth, staff, session):
    ticket = _replied(client, auth, session)
    sign_in(client, "dispatcher")
    assert "已恢复供水" in client.get(f"/queues/replies/{ticket['id']}").text
    back = _form(client, f"/queues/replies/{ticket['id']}", decision="send_back")
    assert back.status_code == 400 and "退回答复须" in back.text
    done = _form(client, f"/queues/replies/{ticket['id']}", decision="approve")
    assert done.status_code == 303 and "done=approved" in done.headers["location"]
    assert ticket["number"] in client.get("/queues/callbacks").text
    missing = _form(client, f"/queues/callbacks/{ticket['id']}")
    assert missing.status_code == 400 and "请选择" in missing.text
    done = _form(
        client, f"/queues/callbacks/{ticket['id']}", satisfaction="dissatisfied", comment="没来水"
    )
    assert done.status_code == 303 and "done=reopened" in done.headers["location"]
    assert "已重办" in client.get(done.headers["location"]).text
    row = _ticket_row(session, ticket["id"])
    assert row.status == Status.dispatched and row.reopen_count == 1
    assert _audit(session, "ticket.callback")[-1].detail == {"satisfaction": "dissatisfied"}


def test_given_extension_request_when_approved_then_the_deadline_moves(
    client, auth, staff, session
):
    body = _ticket(client, auth, WATER_CUT)
    water = next(a for a in body["assignments"] if a["role"] == "lead")
    headers = auth("water.handler")
    client.post(f"/api/v1/assignments/{water['id']}/sign", headers=headers)
    asked = client.post(
        f"/api/v1/assignments/{water['id']}/extensions",
        headers=headers,
        json={"extend_by": 3, "extend_unit": "workdays", "reason": "需协调施工"},
    )
    assert asked.status_code == 201, asked.text
    before = _lead(session, body["ticket"]["id"]).reply_due_at
    sign_in(client, "dispatcher")
    queue = client.get("/queues/extensions")
    assert "需协调施工" in queue.text
    assert f'href="/queues/extensions/{asked.json()["id"]}"' in queue.text
    refuse = _form(client, f"/queues/extensions/{asked.json()['id']}", decision="refuse")
    assert refuse.status_code == 400
    done = _form(client, f"/queues/extensions/{asked.json()['id']}", decision="approve")
    assert done.status_code == 303
    assert "新期限" in client.get(done.headers["location"]).text
    assert _lead(session, body["ticket"]["id"]).reply_due_at > before
    assert _audit(session, "extension.approve")[0].target == f"extension:{asked.json()['id']}"


def test_given_two_tickets_from_one_phone_then_merge_candidate_merged(client, auth, staff, session):
    first = _ticket(client, auth, caller_phone="13900001111")["ticket"]
    second = _ticket(client, auth, "路灯还是不亮", caller_phone="13900001111")["ticket"]
    sign_in(client, "dispatcher")
    queue = client.get("/queues/merge")
    assert second["number"] in queue.text and f'href="/tickets/{first["id"]}"' in queue.text
    page = client.get(f"/queues/merge/{second['id']}")
    assert first["number"] in page.text
    done = _form(client, f"/queues/merge/{second['id']}", parent_id=str(first["id"]))
    assert done.status_code == 303 and "done=merged" in done.headers["location"]
    assert _ticket_row(session, second["id"]).status == Status.merged
    assert second["number"] not in client.get("/queues/merge").text.split("</h1>")[1]


# ---------------------------------------------------------------- the escalation board


def test_given_overdue_sign_for_then_board_lists_it_and_supervisor_acknowledges(
    client, auth, staff, session, session_factory, clock
):
    body = _ticket(client, auth, WATER_CUT)
    clock.advance(timedelta(days=3))
    assert escalation.sweep(session_factory, now=clock.now()).fired > 0
    sign_in(client, "dispatcher")
    board = client.get("/escalations")
    assert body["ticket"]["number"] in board.text
    assert "确认" not in board.text.split("<tbody>")[-1].split("</tbody>")[0].replace(
        "未确认", ""
    )  # a dispatcher may not acknowledge
    filtered = client.get("/escalations?unit=HRSS", headers={"HX-Request": "true"})
    assert body["ticket"]["number"] not in filtered.text and "<html" not in filtered.text
    step = session.scalars(select(Escalation)).first()
    refused = client.post(
        f"/escalations/{step.id}/ack",
        data={"csrf_token": _csrf(board.text)},
        headers={"Accept": "text/html"},
    )
    assert refused.status_code == 404  # a step they may not acknowledge is reported missing
    assert _audit(session, "escalation.ack")[0].outcome == "refused"
    client.cookies.clear()
    sign_in(client, "supervisor")
    board = client.get("/escalations?acknowledged=no&unit=WATER")
    ids = re.findall(r'action="/escalations/(\d+)/ack"', board.text)
    assert ids
    done = client.post(
        f"/escalations/{ids[0]}/ack",
        data={"csrf_token": _csrf(board.text), "back": "/escalations?acknowledged=no&unit=WATER"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith("/escalations?acknowledged=no&unit=WATER&done=")
    assert f'action="/escalations/{ids[0]}/ack"' not in client.get("/escalations").text
    assert _audit(session, "escalation.ack")[-1].outcome == "ok"


def test_the_merge_tab_is_counted_after_the_page_and_exactly(client, auth, staff, session):
    _ticket(client, auth, caller_phone="13900004444")
    _ticket(client, auth, "路灯还是不亮", caller_phone="13900004444")
    sign_in(client, "dispatcher")

    manual = client.get("/queues/manual").text
    count = client.get("/queues/counts/merge")

    # the manual queue's page does not wait for the two weeks' scan: its tab loads it
    assert 'hx-get="/queues/counts/merge"' in manual
    assert count.status_code == 200
    assert re.fullmatch(r'<span class="q-count" id="q-count-merge">1</span>\s*', count.text)
    assert 'hx-get="/queues/counts/merge"' not in client.get("/queues/merge").text
    assert 'hx-get="/queues/counts/' not in client.get("/queues").text
    sign_in(client, "water.handler")
    assert client.get("/queues/counts/merge").status_code in (403, 404)


def test_given_a_refusal_not_about_a_unit_then_not_said_to_be_about_one(
    client, auth, staff, session
):
    """Re-dispatching a returned ticket to the unit that returned it is refused by the
    service; the page says the input was not taken, not that a unit is unknown."""
    ticket = _returned(client, auth, session)
    sign_in(client, "dispatcher")
    same = _form(
        client,
        f"/queues/returns/{ticket['id']}",
        decision="redispatch",
        lead_unit_code="WATER",
        reason="再派一次",
    )
    assert same.status_code in (400, 409, 422)
    assert "系统无法接受提交的内容，未作任何更改。" in same.text
    assert "所选单位或时限策略不存在或已停用" not in same.text
    assert _audit(session, "ticket.redispatch_return")[-1].outcome == "refused"
    unknown = _form(
        client,
        f"/queues/returns/{ticket['id']}",
        decision="redispatch",
        lead_unit_code="NO-SUCH-UNIT",
        reason="再派一次",
    )
    assert "所选单位或时限策略不存在或已停用" in unknown.text
