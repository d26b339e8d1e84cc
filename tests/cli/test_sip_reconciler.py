"""The stuck-state reconciler in the real `hotline sip` process (issue 17): an operator left
"on call" for a call that never existed — as a crashed process leaves one — is freed at the
edge's start; one stuck while the edge runs is freed within one short
``HOTLINE_ACD__RECONCILE_EVERY_S`` period; and the wrap-up each is given ends on time, by
the reconciler's own timer, with no call waiting to make the queue look."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from sqlalchemy import select
from sqlmodel import col

from accounts import agents
from accounts.models import AgentState, AgentStateChange, Role
from accounts.service import create_user
from core.db import make_engine, make_session_factory, saved_id, session_scope
from tests.cli.sip_processes import edge_env, start_edge
from tests.conftest import START, wait_until

PERIOD_S = 1.0


def _stuck(factory, name: str, extension: str, call_key: str) -> int:
    """An operator signed in, rung and answered for ``call_key`` (no call record, no
    engine knows it), all at START — a week and more before now."""
    with session_scope(factory) as session:
        user, _ = create_user(
            session, username=name, display_name=name, role=Role.operator, now=START
        )
        session.flush()
        agents.sign_in(session, user, extension, "", START)
        agents.set_ready(session, saved_id(user), START)
        rung = agents.reserve(session, [], call_key, START)
        assert rung is not None and rung.user_id == saved_id(user)
        agents.answered(session, rung.user_id, call_key, START)
        return rung.user_id


def _moves(factory, user_id: int) -> list[tuple[str, str]]:
    with session_scope(factory) as session:
        rows = session.scalars(
            select(AgentStateChange)
            .where(col(AgentStateChange.user_id) == user_id)
            .order_by(col(AgentStateChange.id))
        ).all()
        return [(f"{r.from_state.value}>{r.to_state.value}", r.source) for r in rows]


def test_given_operators_stuck_on_calls_that_never_existed_when_the_edge_runs_then_freed(
    tmp_path,
):
    edge = edge_env(
        tmp_path,
        rtp_ports=2,
        extra={"HOTLINE_ACD__RECONCILE_EVERY_S": str(PERIOD_S), "HOTLINE_ACD__WRAP_UP_S": "2"},
    )
    factory = make_session_factory(make_engine(edge.db_url))
    li = _stuck(factory, "li", "1001", "left-by-a-crash@edge")

    def state(user_id: int) -> AgentState:
        with session_scope(factory) as session:
            return agents.status(session, user_id, datetime.now(UTC)).state

    proc, lines = start_edge(edge.env)
    try:
        wait_until(lambda: state(li) is not AgentState.on_call, 10, message="li freed")
        line = re.compile(
            # the one log format: level, process, logger, [ids]: message
            r"WARNING sip hotline\.calls\.reconciler\b[^:\n]*: "
            r"reconciler repaired a stuck state: "
            rf"agent_call_missing \(call left-by-a-crash@edge, agent {li}\)"
        )  # written once the pass is over: a moment after the move
        wait_until(lambda: line.search("".join(lines)), 5, message="the repair's log line")

        wang = _stuck(factory, "wang", "1002", "stuck-while-running@edge")
        stuck_at = time.monotonic()
        wait_until(lambda: state(wang) is not AgentState.on_call, 10, message="wang freed")
        freed_s = time.monotonic() - stuck_at
        assert freed_s <= PERIOD_S + 1.0, freed_s  # one period, and the pass's own time

        # Each was given the wrap-up a call's end gives (2 s), which ends by itself.
        for user_id in (li, wang):
            wait_until(lambda u=user_id: state(u) is AgentState.ready, 10, message="ready")
            assert _moves(factory, user_id)[-2:] == [
                ("on_call>wrap_up", "reconciler"),
                ("wrap_up>ready", "acd"),
            ]
        assert "wrap_up_overdue" not in "".join(lines)  # ended on time, not found late
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0, "".join(lines)[-3000:]
