"""The agent panel on the operator console: its shell on the console, its content and moves
(with their errors in words and their audit entries), and the live stream's `agents` event
reaching the centre's tabs — and no unit's — when any operator's state changes."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from accounts.models import AuditEntry, User
from tests.web.test_live import _browser, _next, _stream
from tests.web.test_pages_signin import _csrf, people, sign_in  # noqa: F401 (fixture)

HX = {"HX-Request": "true"}


def _post(client, csrf: str, **form: str):
    return client.post(
        "/console/agent-panel",
        data={"csrf_token": csrf, **form},
        headers=HX,
        follow_redirects=False,
    )


def test_the_console_carries_the_panel_and_it_loads_over_htmx(client, people):
    sign_in(client, "operator")
    console = client.get("/console").text
    panel = client.get("/console/agent-panel", headers=HX)

    assert 'id="agent-panel"' in console and "/static/js/agent_panel.js" in console
    assert 'hx-trigger="load, sse:agents' in console
    assert panel.status_code == 200
    assert 'data-state="signed_out"' in panel.text and 'name="extension"' in panel.text
    assert client.get("/static/js/agent_panel.js").status_code == 200


def test_an_operator_binds_a_seat_goes_ready_on_break_and_signs_out(client, people, session):
    sign_in(client, "operator")
    csrf = _csrf(client.get("/console").text)

    signed = _post(client, csrf, state="signed_in", extension="1001", skills="en")
    ready = _post(client, csrf, state="ready")
    on_break = _post(client, csrf, state="not_ready", reason="break")
    out = _post(client, csrf, state="signed_out")

    assert 'data-state="not_ready"' in signed.text and ">1001<" in signed.text
    assert 'data-state="ready"' in ready.text and 'id="agent-not-ready"' in ready.text
    assert 'data-state="not_ready"' in on_break.text and 'id="agent-ready"' in on_break.text
    assert 'data-state="signed_out"' in out.text
    operator = session.scalars(select(User).where(User.username == "operator")).one()
    audit = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.action == "agent_state", AuditEntry.user_id == operator.id)
        .order_by(AuditEntry.id)
    ).all()
    assert [(a.outcome, a.detail["to"]) for a in audit] == [
        ("ok", "not_ready"),
        ("ok", "ready"),
        ("ok", "not_ready"),
        ("ok", "signed_out"),
    ]


def test_a_bad_seat_is_answered_in_words_and_keeps_what_was_typed(client, people):
    sign_in(client, "operator")
    csrf = _csrf(client.get("/console").text)

    bad = _post(client, csrf, state="signed_in", extension="10a1", skills="en, urgent")
    odd = _post(client, csrf, state="dancing")
    without_js = client.post(
        "/console/agent-panel",
        data={"csrf_token": csrf, "state": "ready"},
        follow_redirects=False,
    )

    assert bad.status_code == 200 and 'role="alert"' in bad.text
    assert "2 to 16 digits" in bad.text
    assert 'value="10a1"' in bad.text and 'value="en, urgent"' in bad.text
    assert 'data-state="signed_out"' in bad.text
    assert odd.status_code == 200 and 'role="alert"' in odd.text
    assert without_js.status_code == 409  # ready while signed out, no htmx: the status says it


def test_a_move_without_the_csrf_token_is_refused(client, people):
    sign_in(client, "operator")

    refused = client.post(
        "/console/agent-panel",
        data={"state": "signed_in", "extension": "1001"},
        follow_redirects=False,
    )

    assert refused.status_code == 403
    panel = client.get("/console/agent-panel", headers=HX).text
    assert 'data-state="signed_out"' in panel


def test_a_handler_has_no_panel(client, people):
    sign_in(client, "water.handler")

    assert client.get("/console/agent-panel", headers=HX).status_code == 403


def test_the_agents_topic_reaches_the_centre_and_no_unit(site):
    moves = httpx.Client(
        base_url=site.url, headers={"Authorization": f"Bearer {site.token('operator')}"}, timeout=20
    )
    handler = next(name for name, u in site.users.items() if u["role"] == "handler")
    with (
        moves,
        _browser(site, "supervisor") as watcher,
        _stream(watcher, "agents") as events,
        _browser(site, handler) as unit,
        _stream(unit, "agents,tickets") as unit_events,
    ):
        _next(events, "hello")
        _next(unit_events, "hello")
        _next(events, "agents")  # the feed's first look: refresh whatever came before it
        made = moves.post(
            "/api/v1/agents/me/state", json={"state": "signed_in", "extension": "1001"}
        )
        assert made.status_code == 200, made.text
        _next(events, "agents")
        moves.post("/api/v1/agents/me/state", json={"state": "ready"})
        _next(events, "agents")
        with pytest.raises(AssertionError, match="no 'agents' event"):
            _next(events, "agents", timeout=1.0)  # two moves, two events: no more
        assert all(e[0] != "agents" for e in list(unit_events.queue))


def test_the_panel_counts_down_a_wrap_up_and_then_shows_ready(client, people, session, clock):
    from accounts import agents

    sign_in(client, "operator")
    csrf = _csrf(client.get("/console").text)
    _post(client, csrf, state="signed_in", extension="1001")
    _post(client, csrf, state="ready")
    operator = session.scalars(select(User).where(User.username == "operator")).one()
    agents.reserve(session, [], "c1", clock.now())
    ringing = client.get("/console/agent-panel", headers=HX).text
    agents.answered(session, operator.id, "c1", clock.now())
    agents.call_ended(session, operator.id, "c1", clock.now(), wrap_up_s=15)
    session.commit()
    clock.advance(seconds=5)

    wrapping = client.get("/console/agent-panel", headers=HX).text
    clock.advance(seconds=10)
    after = client.get("/console/agent-panel", headers=HX).text

    assert 'data-state="ringing"' in ringing and 'id="agent-ready"' not in ringing
    assert 'data-state="wrap_up"' in wrapping and 'data-remaining="10"' in wrapping
    assert 'data-elapsed="5"' in wrapping and ">0:10<" in wrapping
    assert 'id="agent-ready"' in wrapping  # ending the wrap-up early
    assert 'data-state="ready"' in after and "data-remaining" not in after
