"""Operators' states: every move and its stored change, the moves that are refused, the queue's
choice of agent (longest idle, skills, a bound seat), wrap-up ending by itself on an injected
clock, and reserve racing in two real processes on PostgreSQL and SQLite."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from accounts import agents
from accounts.models import AgentState, AgentStateChange, NotReadyReason, Role, User
from accounts.service import create_user
from core.bell import LocalBell
from core.db import make_engine, make_session_factory, saved_id, session_scope
from core.errors import Conflict, IllegalTransition, InvalidInput
from hotline.tables import metadata

ROOT = Path(__file__).resolve().parents[2]


def _user(session: Session, name: str, now, role: Role = Role.operator) -> User:
    user, _ = create_user(session, username=name, display_name=name, role=role, now=now)
    session.flush()
    return user


def _ready(session: Session, user: User, ext: str, now, skills: str = "") -> agents.Agent:
    agents.sign_in(session, user, ext, skills, now)
    return agents.set_ready(session, saved_id(user), now)


def _moves(session: Session, user_id: int) -> list[tuple[str, str, str | None, str]]:
    return [
        (c.from_state.value, c.to_state.value, c.reason.value if c.reason else None, c.source)
        for c in agents.changes_of(session, user_id)
    ]


def test_a_call_from_sign_in_to_ready_again_stores_every_move(session, clock):
    op = _user(session, "op1", clock.now())

    signed = agents.sign_in(session, op, "1001", "EN, urgent", clock.now())
    assert (signed.state, signed.extension, signed.skills) == (
        AgentState.not_ready,
        "1001",
        frozenset({"en", "urgent"}),
    )
    clock.advance(seconds=5)
    ready = agents.set_ready(session, op.id, clock.now())
    assert ready.idle_since == clock.now()
    clock.advance(seconds=30)
    rung = agents.reserve(session, ["en"], "call-1", clock.now())
    assert rung is not None and (rung.user_id, rung.state, rung.call_key) == (
        op.id,
        AgentState.ringing,
        "call-1",
    )
    clock.advance(seconds=4)
    assert agents.answered(session, op.id, "call-1", clock.now()).state == AgentState.on_call
    clock.advance(seconds=120)
    wrap = agents.call_ended(session, op.id, "call-1", clock.now(), wrap_up_s=15)
    assert wrap.state == AgentState.wrap_up
    assert wrap.wrap_up_until == clock.now() + timedelta(seconds=15)

    clock.advance(seconds=14)
    assert agents.end_wrap_ups(session, clock.now()) == []
    assert agents.reserve(session, [], "call-2", clock.now()) is None  # still wrapping up
    clock.advance(seconds=1)
    assert agents.next_wrap_up_end(session) == clock.now()
    [back] = agents.end_wrap_ups(session, clock.now())

    assert (back.state, back.idle_since) == (AgentState.ready, clock.now())
    assert agents.status(session, op.id, clock.now()).state == AgentState.ready
    assert _moves(session, op.id) == [
        ("signed_out", "not_ready", None, "console"),
        ("not_ready", "ready", None, "console"),
        ("ready", "ringing", None, "acd"),
        ("ringing", "on_call", None, "acd"),
        ("on_call", "wrap_up", None, "acd"),
        ("wrap_up", "ready", None, "acd"),
    ]
    stored = agents.changes_of(session, op.id)
    assert [c.call_key for c in stored[2:5]] == ["call-1"] * 3
    assert stored[-1].at - stored[0].at == timedelta(seconds=174)


def test_reserve_ends_a_wrap_up_that_is_over_and_rings_that_operator(session, clock):
    op = _ready(session, _user(session, "op1", clock.now()), "1001", clock.now())
    agents.reserve(session, [], "c1", clock.now())
    agents.answered(session, op.user_id, "c1", clock.now())
    agents.call_ended(session, op.user_id, "c1", clock.now(), wrap_up_s=10)
    clock.advance(seconds=10)

    rung = agents.reserve(session, [], "c2", clock.now())

    assert rung is not None and rung.user_id == op.user_id and rung.call_key == "c2"


def test_reserve_takes_the_longest_idle_operator_with_the_skills(session, clock):
    a = _user(session, "a", clock.now())
    b = _user(session, "b", clock.now())
    c = _user(session, "c", clock.now())
    _ready(session, a, "1001", clock.now(), "zh")
    clock.advance(seconds=10)
    _ready(session, b, "1002", clock.now(), "zh,en")
    clock.advance(seconds=10)
    _ready(session, c, "1003", clock.now(), "en")

    first_en = agents.reserve(session, ["en"], "c1", clock.now())
    any_one = agents.reserve(session, [], "c2", clock.now())
    second_en = agents.reserve(session, ["EN"], "c3", clock.now())

    assert (first_en.user_id, any_one.user_id, second_en.user_id) == (b.id, a.id, c.id)
    assert agents.reserve(session, [], "c4", clock.now()) is None
    assert agents.ready_count(session) == 0 and agents.signed_in_count(session) == 3
    assert agents.signed_in_count(session, ["en"]) == 2
    assert agents.signed_in_count(session, ["en", "zh"]) == 1
    assert agents.signed_in_count(session, ["fr"]) == 0


def test_a_missed_ring_makes_the_operator_not_ready_and_the_next_is_rung(session, clock):
    a = _ready(session, _user(session, "a", clock.now()), "1001", clock.now())
    clock.advance(seconds=1)
    b = _ready(session, _user(session, "b", clock.now()), "1002", clock.now())
    first = agents.reserve(session, [], "c1", clock.now())
    clock.advance(seconds=10)

    gone = agents.missed(session, first.user_id, "c1", clock.now())
    second = agents.reserve(session, [], "c1", clock.now())

    assert first.user_id == a.user_id
    assert (gone.state, gone.reason) == (AgentState.not_ready, NotReadyReason.missed)
    assert second.user_id == b.user_id
    assert agents.ready_count(session) == 0


def test_a_caller_who_hangs_up_while_ringing_leaves_the_operator_first_in_line(session, clock):
    a = _ready(session, _user(session, "a", clock.now()), "1001", clock.now())
    clock.advance(seconds=5)
    _ready(session, _user(session, "b", clock.now()), "1002", clock.now())
    agents.reserve(session, [], "c1", clock.now())
    clock.advance(seconds=3)

    back = agents.release(session, a.user_id, "c1", clock.now())

    assert back.state == AgentState.ready and back.idle_since == a.idle_since
    assert agents.release(session, a.user_id, "c1", clock.now()) is None  # said twice
    assert agents.reserve(session, [], "c2", clock.now()).user_id == a.user_id
    # call_ended while still ringing means the same.
    clock.advance(seconds=1)
    assert agents.call_ended(session, a.user_id, "c2", clock.now()).state == AgentState.ready
    assert agents.reserve(session, [], "c3", clock.now()).user_id == a.user_id


def test_the_queue_moves_on_a_call_the_operator_is_not_on_change_nothing(session, clock):
    a = _ready(session, _user(session, "a", clock.now()), "1001", clock.now())
    agents.reserve(session, [], "c1", clock.now())

    assert agents.answered(session, a.user_id, "other", clock.now()) is None
    assert agents.release(session, a.user_id, "other", clock.now()) is None
    assert agents.missed(session, a.user_id, "other", clock.now()) is None
    assert agents.call_ended(session, a.user_id, "other", clock.now()) is None
    assert agents.answered(session, 999_999, "c1", clock.now()) is None
    assert agents.status(session, a.user_id, clock.now()).state == AgentState.ringing


def test_not_ready_reasons_and_the_moves_that_are_refused(session, clock):
    op = _user(session, "op", clock.now())
    with pytest.raises(IllegalTransition, match="cannot go ready while signed out"):
        agents.set_ready(session, op.id, clock.now())
    with pytest.raises(InvalidInput, match="2 to 16 digits"):
        agents.sign_in(session, op, "10a1", None, clock.now())
    with pytest.raises(InvalidInput, match="skill"):
        agents.sign_in(session, op, "1001", "en, 中文", clock.now())
    agents.sign_in(session, op, "1001", None, clock.now())
    with pytest.raises(IllegalTransition, match="already signed in at seat 1001"):
        agents.sign_in(session, op, "1002", None, clock.now())
    for reason in ("training", "meeting", "after_call_work", "break"):
        assert agents.set_not_ready(session, op.id, reason, clock.now()).reason.value == reason
    with pytest.raises(InvalidInput, match="set by the queue"):
        agents.set_not_ready(session, op.id, "missed", clock.now())
    with pytest.raises(InvalidInput, match="the reason is one of: break, training"):
        agents.set_not_ready(session, op.id, "lunch", clock.now())
    agents.set_ready(session, op.id, clock.now())
    agents.reserve(session, [], "c1", clock.now())
    with pytest.raises(IllegalTransition, match="while ringing"):
        agents.set_not_ready(session, op.id, "break", clock.now())
    agents.answered(session, op.id, "c1", clock.now())
    with pytest.raises(IllegalTransition, match="cannot sign out while on call"):
        agents.sign_out(session, op.id, clock.now())

    out = agents.sign_out(session, op.id, clock.now(), by_user_id=None, force=True, source="admin")

    assert (out.state, out.extension, out.call_key) == (AgentState.signed_out, None, None)
    assert _moves(session, op.id)[-1] == ("on_call", "signed_out", None, "admin")
    # The queue's later word about that call changes nothing.
    assert agents.call_ended(session, op.id, "c1", clock.now()) is None


def test_a_seat_is_bound_to_one_signed_in_operator_at_a_time(session, clock):
    a = _user(session, "a", clock.now())
    b = _user(session, "b", clock.now())
    agents.sign_in(session, a, "1001", None, clock.now())

    with pytest.raises(Conflict, match="seat 1001 is in use"):
        agents.sign_in(session, b, "1001", None, clock.now())
    agents.sign_out(session, a.id, clock.now())
    taken = agents.sign_in(session, b, "1001", None, clock.now())

    assert taken.extension == "1001"
    assert agents.status(session, a.id, clock.now()).extension is None


def test_handlers_and_deactivated_accounts_do_not_sit_at_a_seat(session, clock):
    from dispatch.models import Unit

    unit = Unit(code="W", name="水务", level="district", district="x")
    session.add(unit)
    session.flush()
    handler, _ = create_user(
        session, username="h", display_name="h", role=Role.handler, unit_id=unit.id, now=clock.now()
    )
    gone = _user(session, "gone", clock.now())
    gone.active = False

    with pytest.raises(InvalidInput, match="handler does not take calls"):
        agents.sign_in(session, handler, "1001", None, clock.now())
    with pytest.raises(Conflict, match="deactivated"):
        agents.sign_in(session, gone, "1001", None, clock.now())


def test_moves_ring_the_bell_once_after_commit_and_never_after_a_rollback(session, clock):
    bell = LocalBell()
    rings: list[int] = []
    bell.subscribe("agents", lambda: rings.append(1))
    op = _user(session, "op", clock.now())
    session.commit()

    agents.sign_in(session, op, "1001", None, clock.now(), bell=bell)
    agents.set_ready(session, op.id, clock.now(), bell=bell)
    assert rings == []
    session.commit()
    assert rings == [1]
    agents.set_not_ready(session, op.id, "break", clock.now(), bell=bell)
    session.rollback()
    session.commit()

    assert rings == [1]
    assert agents.status(session, op.id, clock.now()).state == AgentState.ready
    agents.set_not_ready(session, op.id, "meeting", clock.now(), bell=bell)
    session.commit()
    assert rings == [1, 1]  # the rolled-back ring did not silence the next one


def test_the_revision_grows_with_every_move(session, clock):
    before = agents.revision(session)
    op = _ready(session, _user(session, "op", clock.now()), "1001", clock.now())
    agents.reserve(session, [], "c1", clock.now())

    assert agents.revision(session) == before + 3
    assert agents.revision(session) == before + op.version + 1


def test_a_stale_version_loses_the_compare_and_set(session, clock):
    op = _ready(session, _user(session, "op", clock.now()), "1001", clock.now())
    agents.reserve(session, [], "c1", clock.now())

    # The state the other process saw before the reserve: its move now matches no row.
    assert (
        agents._move(
            session,
            op,
            AgentState.not_ready,
            now=clock.now(),
            source="console",
            by_user_id=op.user_id,
            bell=None,
            reason=NotReadyReason.break_,
        )
        is None
    )
    assert agents.status(session, op.user_id, clock.now()).state == AgentState.ringing


# ---------------------------------------------------------------- two processes racing

RACER = """
import json, sys, time
from datetime import UTC, datetime
from accounts import agents
from core.db import make_engine, make_session_factory, saved_id, session_scope
url, name, attempts, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
factory = make_session_factory(make_engine(url))
got, times = [], []
while time.time() < start:
    time.sleep(0.001)
for n in range(attempts):
    t0 = time.perf_counter()
    with session_scope(factory) as session:
        agent = agents.reserve(session, [], f"{name}-{n}", datetime.now(UTC))
        got.append(agent.user_id if agent else None)
    times.append((time.perf_counter() - t0) * 1000)
print(json.dumps({"got": got, "ms": times}))
"""


def test_two_processes_reserving_at_once_never_ring_one_operator_twice(fresh_db_url, clock):
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    factory = make_session_factory(engine)
    operators = 24
    with session_scope(factory) as session:
        for n in range(operators):
            user = _user(session, f"op{n}", clock.now())
            clock.advance(seconds=1)
            _ready(session, user, f"{1000 + n}", clock.now())
    engine.dispose()
    start = time.time() + 2.0  # both interpreters up and connected before the race
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, fresh_db_url, name, "20", str(start)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("left", "right")
    ]
    results = []
    for racer in racers:
        out, _ = racer.communicate(timeout=120)
        assert racer.returncode == 0
        results.append(json.loads(out))

    got = [uid for r in results for uid in r["got"] if uid is not None]
    assert len(got) == operators  # 40 tries for 24 operators: every one rung once
    assert len(set(got)) == operators  # and never twice
    assert sum(uid is None for r in results for uid in r["got"]) == 40 - operators
    engine = make_engine(fresh_db_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            rows = session.scalars(
                select(AgentStateChange).where(AgentStateChange.to_state == AgentState.ringing)
            ).all()
            assert sorted(r.user_id for r in rows) == sorted(got)
            assert agents.ready_count(session) == 0
    finally:
        engine.dispose()
    ms = sorted(t for r in results for t in r["ms"])
    wins = [sum(uid is not None for uid in r["got"]) for r in results]
    print(f"reserve ms: median {ms[len(ms) // 2]:.2f} worst {ms[-1]:.2f}; rung per process {wins}")
