"""The call's controls on the console's ticket view: shown for the ticket's bridged call (and
hidden without one), a click becomes one command for the edge (a double click too), refusals
in words with their audit entries, the supervisor's "listen in", and the page's stream
telling the console when the edge has written what the call stands at."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select, update
from sqlmodel import col

from accounts.models import AuditEntry, Role, User
from accounts.signin import set_password
from core.db import saved_id, session_scope
from hotline.calls import call_control as cc
from telephony.endpoint import CallDirection
from telephony.models import CallCommand, CallCommandState, CallRecord, QueueOutcome
from tests.web.test_live import _browser, _next, _stream
from tests.web.test_pages_signin import PASSWORD, _csrf, people, sign_in  # noqa: F401
from tests.web.test_tickets import WATER_CUT, post

HX = {"HX-Request": "true"}
CALL = "bridged-1@edge"


def _bridged(session, clock, ticket_id: int, operator: str = "operator") -> None:
    user = session.scalars(select(User).where(col(User.username) == operator)).one()
    now = clock.now()
    session.add(
        CallRecord(
            call_id=CALL,
            direction=CallDirection.INBOUND,
            caller_number="13800001111",
            arrived_at=now - timedelta(seconds=40),
            answered_at=now - timedelta(seconds=30),
            ticket_id=ticket_id,
            queue_outcome=QueueOutcome.agent,
            agent_user_id=user.id,
            agent_extension="8001",
            edge_id="edge-1",
            created_at=now,
            updated_at=now,
        )
    )
    session.commit()


def _ticket(client, auth) -> int:
    return int(post(client, auth("operator"), description=WATER_CUT).json()["ticket"]["id"])


def _post(client, ticket_id: int, csrf: str, **form: str):
    return client.post(
        f"/console/tickets/{ticket_id}/call",
        data={"csrf_token": csrf, **form},
        headers=HX,
        follow_redirects=False,
    )


def test_the_ticket_view_loads_the_controls_which_hide_without_a_call(client, auth, people):
    ticket_id = _ticket(client, auth)
    sign_in(client, "operator")
    page = client.get(f"/console/tickets/{ticket_id}").text
    fragment = client.get(f"/console/tickets/{ticket_id}/call", headers=HX).text

    assert f'hx-get="/console/tickets/{ticket_id}/call" hx-trigger="load"' in page
    assert "calls" in page.split("sse-connect=")[1].split('"')[1]  # the page hears `calls`
    assert 'id="call-control"' in fragment and " hidden>" in fragment


def test_the_operator_holds_and_transfers_and_a_double_click_is_one_command(
    client, auth, people, session, clock
):
    ticket_id = _ticket(client, auth)
    _bridged(session, clock, ticket_id)
    sign_in(client, "operator")
    csrf = _csrf(client.get(f"/console/tickets/{ticket_id}").text)
    shown = client.get(f"/console/tickets/{ticket_id}/call", headers=HX).text
    assert 'value="hold"' in shown and 'value="transfer"' in shown and 'value="consult"' in shown
    assert 'value="monitor"' not in shown  # listening in is for supervisors

    held = _post(client, ticket_id, csrf, action="hold")
    again = _post(client, ticket_id, csrf, action="hold")
    moved = _post(client, ticket_id, csrf, action="transfer", target="800 2")

    assert held.status_code == again.status_code == moved.status_code == 200
    session.expire_all()
    commands = session.scalars(select(CallCommand).order_by(CallCommand.id)).all()
    assert [(c.kind.value, c.target, c.state) for c in commands] == [
        ("hold", "", CallCommandState.pending),
        ("transfer", "8002", CallCommandState.pending),
    ]
    assert moved.text.count("cmd-pending") == 2  # both wait for the edge
    operator = session.scalars(select(User).where(User.username == "operator")).one()
    audit = session.scalars(
        select(AuditEntry).where(
            AuditEntry.action == "call_control", AuditEntry.user_id == operator.id
        )
    ).all()
    assert [a.detail["action"] for a in audit] == ["hold", "hold", "transfer"]


def test_refusals_are_words_and_keep_what_was_typed(client, auth, people, session, clock):
    ticket_id = _ticket(client, auth)
    _bridged(session, clock, ticket_id)
    sign_in(client, "operator")
    csrf = _csrf(client.get(f"/console/tickets/{ticket_id}").text)

    bad = _post(client, ticket_id, csrf, action="transfer", target="80a2")
    odd = _post(client, ticket_id, csrf, action="explode")
    listen = _post(client, ticket_id, csrf, action="monitor", target="8001")
    plain = client.post(
        f"/console/tickets/{ticket_id}/call",
        data={"csrf_token": csrf, "action": "transfer", "target": "x"},
        follow_redirects=False,
    )

    assert "仅数字" in bad.text and 'value="80a2"' in bad.text
    assert "请选择通话操作按钮之一" in odd.text
    assert "只有班长可以监听" in listen.text
    assert plain.status_code == 409  # without htmx: the whole answer says it
    assert session.scalar(select(CallCommand.id)) is None


def test_a_supervisor_listens_in_from_their_own_seat(client, auth, people, session, clock):
    ticket_id = _ticket(client, auth)
    _bridged(session, clock, ticket_id)
    supervisor = session.scalars(select(User).where(User.role == Role.supervisor)).first()
    set_password(session, user_id=saved_id(supervisor), password=PASSWORD, now=clock.now())
    session.commit()
    sign_in(client, supervisor.username)
    csrf = _csrf(client.get(f"/console/tickets/{ticket_id}").text)
    shown = client.get(f"/console/tickets/{ticket_id}/call", headers=HX).text
    assert 'value="monitor"' in shown and 'value="hold"' in shown

    listened = _post(client, ticket_id, csrf, action="monitor", target="8009")
    assert listened.status_code == 200
    command = session.scalars(select(CallCommand)).one()
    assert (command.kind.value, command.target) == ("monitor", "8009")


def test_the_stream_tells_the_console_when_the_edge_wrote_the_controls(site, clock):
    api = httpx.Client(
        base_url=site.url, headers={"Authorization": f"Bearer {site.token('operator')}"}, timeout=20
    )
    with api:
        made = api.post("/api/v1/tickets", json={"description": WATER_CUT, "channel": "phone"})
    assert made.status_code == 201, made.text
    ticket_id = made.json()["ticket"]["id"]
    with session_scope(site.session_factory) as session:
        _bridged(session, clock, ticket_id)
    with _browser(site, "operator") as browser, _stream(browser, "calls") as events:
        assert _next(events, "hello")
        with session_scope(site.session_factory) as session:
            session.execute(
                update(CallRecord)
                .where(col(CallRecord.call_id) == CALL)
                .values(control=cc.Controls(held=True).dump(), control_seq=1)
            )
        assert _next(events, "calls")
        shown = browser.get(f"/console/tickets/{ticket_id}/call", headers=HX).text
    assert "保持中" in shown and 'value="unhold"' in shown and 'value="hold"' not in shown


def test_nothing_to_control_once_the_call_ended(client, auth, people, session, clock):
    ticket_id = _ticket(client, auth)
    _bridged(session, clock, ticket_id)
    session.execute(
        update(CallRecord).where(CallRecord.call_id == CALL).values(ended_at=clock.now())
    )
    session.commit()
    sign_in(client, "operator")
    csrf = _csrf(client.get(f"/console/tickets/{ticket_id}").text)
    late = _post(client, ticket_id, csrf, action="hold")
    assert "该通话已不在话务员线路上" in late.text and " hidden>" not in late.text
    assert 'value="hold"' not in late.text
    assert " hidden>" in client.get(f"/console/tickets/{ticket_id}/call", headers=HX).text


def test_the_wallboard_offers_supervisors_to_listen_in_on_an_operators_call(
    client, auth, people, session, clock
):
    from accounts import agents

    ticket_id = _ticket(client, auth)
    _bridged(session, clock, ticket_id)
    operator = session.scalars(select(User).where(User.username == "operator")).one()
    agents.sign_in(session, operator, "8001", "", clock.now())
    agents.set_ready(session, saved_id(operator), clock.now())
    agents.reserve(session, (), CALL, clock.now())
    agents.answered(session, saved_id(operator), CALL, clock.now())
    session.commit()
    sign_in(client, "admin")
    board = client.get("/wallboard/board", headers=HX).text
    assert f'href="/console/tickets/{ticket_id}#call-control"' in board
