"""The agents API: an operator moves only themselves, a supervisor or an administrator may
sign another out, handlers see none of it; illegal moves answer 409, bad input 422."""

from __future__ import annotations

from sqlalchemy import select

from accounts.models import AgentStateChange


def _move(client, auth, who: str, body: dict, path: str = "/api/v1/agents/me/state"):
    return client.post(path, json=body, headers=auth(who))


def test_an_operator_signs_in_goes_ready_then_on_break_then_signs_out(client, auth, world, session):
    assert client.get("/api/v1/agents/me", headers=auth("operator")).json()["state"] == "signed_out"

    signed = _move(
        client, auth, "operator", {"state": "signed_in", "extension": "1001", "skills": ["EN"]}
    )
    ready = _move(client, auth, "operator", {"state": "ready"})
    listed = client.get("/api/v1/agents", headers=auth("dispatcher"))
    on_break = _move(client, auth, "operator", {"state": "not_ready", "reason": "break"})
    out = _move(client, auth, "operator", {"state": "signed_out"})

    assert signed.status_code == 200, signed.text
    assert signed.json() | {"since": None} == signed.json() | {
        "state": "not_ready",
        "extension": "1001",
        "skills": ["en"],
        "username": "operator",
        "since": None,
    }
    assert ready.json()["state"] == "ready" and ready.json()["idle_since"] is not None
    assert [(a["username"], a["state"]) for a in listed.json()] == [("operator", "ready")]
    assert (on_break.json()["state"], on_break.json()["reason"]) == ("not_ready", "break")
    assert (out.json()["state"], out.json()["extension"]) == ("signed_out", None)
    changes = session.scalars(
        select(AgentStateChange)
        .where(AgentStateChange.user_id == world.staff["operator"].id)
        .order_by(AgentStateChange.id)
    ).all()
    assert [(c.to_state.value, c.source, c.by_user_id) for c in changes] == [
        ("not_ready", "console", world.staff["operator"].id),
        ("ready", "console", world.staff["operator"].id),
        ("not_ready", "console", world.staff["operator"].id),
        ("signed_out", "console", world.staff["operator"].id),
    ]
    assert client.get("/api/v1/agents", headers=auth("dispatcher")).json() == []
    assert len(client.get("/api/v1/agents?all=true", headers=auth("dispatcher")).json()) == 1


def test_an_operator_cannot_move_anyone_else(client, auth, world):
    _move(client, auth, "dispatcher", {"state": "signed_in", "extension": "1002"})
    other = world.staff["dispatcher"].id

    for body in ({"state": "signed_out"}, {"state": "ready"}):
        refused = _move(client, auth, "operator", body, f"/api/v1/agents/{other}/state")
        assert refused.status_code == 403, refused.text
    assert (
        _move(
            client, auth, "operator", {"state": "ready"}, "/api/v1/agents/999999/state"
        ).status_code
        == 403
    )
    assert (
        client.get("/api/v1/agents/me", headers=auth("dispatcher")).json()["state"] == "not_ready"
    )


def test_a_supervisor_may_force_a_sign_out_and_nothing_else(client, auth, world, session):
    operator = world.staff["operator"].id
    _move(client, auth, "operator", {"state": "signed_in", "extension": "1001"})
    path = f"/api/v1/agents/{operator}/state"

    ready = _move(client, auth, "supervisor", {"state": "ready"}, path)
    out = _move(client, auth, "supervisor", {"state": "signed_out"}, path)
    by_admin = _move(client, auth, "admin", {"state": "signed_out"}, path)
    missing = _move(client, auth, "admin", {"state": "signed_out"}, "/api/v1/agents/999999/state")

    assert ready.status_code == 403
    assert out.status_code == 200 and out.json()["state"] == "signed_out"
    assert by_admin.status_code == 409  # already signed out
    assert missing.status_code == 404
    last = session.scalars(
        select(AgentStateChange)
        .where(AgentStateChange.user_id == operator)
        .order_by(AgentStateChange.id.desc())
    ).first()
    assert (last.source, last.by_user_id) == ("admin", world.staff["supervisor"].id)


def test_handlers_and_strangers_are_refused(client, auth, world):
    for path in ("/api/v1/agents", "/api/v1/agents/me"):
        assert client.get(path, headers=auth("water.handler")).status_code == 403
        assert client.get(path).status_code == 401
    assert _move(client, auth, "water.handler", {"state": "ready"}).status_code == 403


def test_bad_and_illegal_moves_are_refused_and_change_nothing(client, auth, world):
    bad = [
        {"state": "asleep"},
        {"state": "signed_in", "extension": "12345678901234567"},
        {"state": "not_ready", "reason": "lunch"},
        {},
    ]
    for body in bad:
        assert _move(client, auth, "operator", body).status_code == 422, body
    assert _move(client, auth, "operator", {"state": "ready"}).status_code == 409
    assert _move(client, auth, "operator", {"state": "signed_in"}).status_code == 422
    assert (
        _move(client, auth, "operator", {"state": "signed_in", "extension": "1x"}).status_code
        == 422
    )
    _move(client, auth, "operator", {"state": "signed_in", "extension": "1001"})
    taken = _move(client, auth, "dispatcher", {"state": "signed_in", "extension": "1001"})
    no_reason = _move(client, auth, "operator", {"state": "not_ready"})
    missed = _move(client, auth, "operator", {"state": "not_ready", "reason": "missed"})

    assert taken.status_code == 409 and "seat 1001" in taken.text
    assert no_reason.status_code == 422 and missed.status_code == 422
    me = client.get("/api/v1/agents/me", headers=auth("operator")).json()
    assert (me["state"], me["reason"], me["extension"]) == ("not_ready", None, "1001")


def test_a_wrap_up_that_is_over_reads_as_ready(client, auth, world, session, clock):
    from accounts import agents

    _move(client, auth, "operator", {"state": "signed_in", "extension": "1001"})
    _move(client, auth, "operator", {"state": "ready"})
    user_id = world.staff["operator"].id
    agents.reserve(session, [], "c1", clock.now())
    agents.answered(session, user_id, "c1", clock.now())
    agents.call_ended(session, user_id, "c1", clock.now(), wrap_up_s=15)
    session.commit()

    during = client.get("/api/v1/agents/me", headers=auth("operator")).json()
    clock.advance(seconds=15)
    after = client.get("/api/v1/agents/me", headers=auth("operator")).json()

    assert during["state"] == "wrap_up" and during["wrap_up_until"] is not None
    assert after["state"] == "ready" and after["wrap_up_until"] is None


def test_a_move_rings_the_deployments_bell_after_it_is_stored(client, auth, world, app):
    import threading

    from core import bell

    heard = threading.Event()
    stop = bell.for_settings(app.state.settings).subscribe("agents", heard.set)
    try:
        refused = _move(client, auth, "operator", {"state": "ready"})
        assert refused.status_code == 409
        assert not heard.wait(0.3)  # nothing stored, nothing rung

        made = _move(client, auth, "operator", {"state": "signed_in", "extension": "1001"})

        assert made.status_code == 200
        assert heard.wait(5)
    finally:
        stop()
