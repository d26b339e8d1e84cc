"""The media timeout as `hotline sip` runs it (issue 17): ``HOTLINE_TELEPHONY__RTP_TIMEOUT_S``
reaches the edge (``cli/sip_process.py``), so a bridged call whose caller's phone went silent
without a BYE is hung up on both sides within the setting, and its call record says
``media_timeout`` — an answered call still, the operator in wrap-up; 0 turns the timeout off
and a silent bridged call stays up until someone hangs up."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from accounts import agents
from accounts.models import AgentState
from core.db import make_engine, make_session_factory, session_scope
from telephony.endpoint import Disposition
from telephony.models import CallRecord, QueueOutcome
from tests.cli.sip_processes import (
    HOTLINE,
    edge_env,
    ready_operator,
    register_seat,
    sipp_out,
    start_edge,
)
from tests.conftest import START, wait_until
from tests.telephony.sip_peers import HOST, RtpPeer, free_udp_port, start_sipp


@dataclass
class Centre:
    """`hotline sip` with one operator ready at a seat whose phone registered."""

    port: int  # the edge's SIP port
    phone: int  # the seat's phone's SIP port
    factory: Callable[[], Session]
    operator_id: int
    lines: list[str]

    def record(self) -> CallRecord | None:
        with self.factory() as s:
            return s.scalars(select(CallRecord)).first()

    def bridged(self) -> CallRecord | None:
        call = self.record()
        return call if call is not None and call.agent_answered_at is not None else None

    def ended(self) -> CallRecord | None:
        call = self.record()
        return call if call is not None and call.ended_at is not None else None


@pytest.fixture
def centre(request, tmp_path: Path) -> Iterator[Centre]:
    """``request.param``: the value of HOTLINE_TELEPHONY__RTP_TIMEOUT_S."""
    edge = edge_env(
        tmp_path,
        rtp_ports=8,
        extra={
            "HOTLINE_ACD__RING_TIMEOUT_S": "5",
            "HOTLINE_TELEPHONY__RTP_TIMEOUT_S": request.param,
        },
    )
    made = subprocess.run(
        [str(HOTLINE), "seats", "add", "1001"], env=edge.env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stdout + made.stderr
    password = re.search(r"password: (\S+)", made.stdout)
    assert password
    factory = make_session_factory(make_engine(edge.db_url))
    operator_id = ready_operator(factory, START)
    proc, lines = start_edge(edge.env)
    try:
        phone = free_udp_port()
        register_seat(edge.port, phone, password.group(1), lines)
        yield Centre(edge.port, phone, factory, operator_id, lines)
    finally:
        proc.terminate()
        proc.wait(30)


def _talk(caller_scenario: str, centre: Centre, *, hold_ms: int = 0) -> CallRecord:
    """A citizen's call bridged to the operator, neither phone sending RTP: the call's
    record once it has ended, both phones having got their BYE (or sent it)."""
    caller_rtp, agent_rtp = RtpPeer(), RtpPeer()
    seat = start_sipp(
        "uas_agent_answer.xml", port=centre.phone, keys={"rtp_port": agent_rtp.port}, timeout=60
    )
    caller = start_sipp(
        caller_scenario,
        target=f"{HOST}:{centre.port}",
        keys={"rtp_port": caller_rtp.port, "fmts": "0 101"},
        hold=hold_ms,
        timeout=60,
    )

    def log() -> str:
        return "".join(centre.lines)

    try:
        wait_until(centre.bridged, 30, message="the call bridged to the operator")
        wait_until(centre.ended, 40, message="the call's record ended")
        out, _ = caller.communicate(timeout=20)
        assert caller.returncode == 0, out[-2500:] + log()
        seat_out, _ = seat.communicate(timeout=20)
        assert seat.returncode == 0, seat_out[-2500:] + log()  # the seat got its BYE
    finally:
        for p in (seat, caller):
            if p.poll() is None:
                sipp_out(p)
        caller_rtp.close()
        agent_rtp.close()
    call = centre.ended()
    assert call is not None
    return call


def _on_line_s(call: CallRecord) -> float:
    assert call.ended_at is not None and call.agent_answered_at is not None
    return (call.ended_at - call.agent_answered_at).total_seconds()


@pytest.mark.parametrize("centre", ["2"], indirect=True)
def test_given_a_2_s_rtp_timeout_when_a_bridged_caller_sends_nothing_then_it_ends_as_media_timeout(
    centre,
):
    call = _talk("uac_call_until_bye.xml", centre)  # the caller never hangs up himself

    log = "".join(centre.lines)
    assert call.disposition is Disposition.MEDIA_TIMEOUT, log
    # An answered call all the same: the operator took it, and is in wrap-up after it.
    assert call.queue_outcome is QueueOutcome.agent and call.agent_user_id == centre.operator_id
    # Not before the setting, and well within it plus the bridge's read and the BYE.
    assert 1.8 <= _on_line_s(call) <= 2.0 + 4.0, (call.agent_answered_at, call.ended_at)
    assert "media timeout" in log
    with session_scope(centre.factory) as session:
        state = agents.status(session, centre.operator_id, START)
    assert state.state is AgentState.wrap_up and state.call_key == call.call_id


@pytest.mark.parametrize("centre", ["0"], indirect=True)
def test_given_rtp_timeout_0_then_a_silent_bridged_call_stays_up_until_the_caller_hangs_up(
    centre,
):
    # The caller holds 12 s from the INVITE: the greeting (~5 s) and the ring, then a silent
    # bridge far longer than a 2 s timeout would let it last (and shorter than the 10 s the
    # seat's phone waits for the BYE).
    call = _talk("uac_call.xml", centre, hold_ms=12_000)

    assert call.disposition is Disposition.CALLER_HUNG_UP, "".join(centre.lines)
    assert _on_line_s(call) >= 3.5, (call.agent_answered_at, call.ended_at)
    assert "media timeout" not in "".join(centre.lines)
