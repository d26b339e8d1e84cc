"""A person takes the call (issue 17): `hotline sip` with a seat registered by the operator's
phone and the operator ready — a caller is queued, the operator's phone (a sipp UAS at the
registered contact) rings and answers, the two are bridged, and the records say so: the
call's outcome (an operator, which one, at which seat, how many rings), a draft ticket in
intake for the operator to decide (never dispatched by itself), one stereo recording, and the
operator in wrap-up after the caller hangs up. With nobody signed in the robot answers as
before seats, and the record says why."""

from __future__ import annotations

import re
import subprocess
import wave
from pathlib import Path

from sqlalchemy import select
from sqlmodel import col

from accounts import agents
from accounts.models import AgentState
from core.db import make_engine, make_session_factory, session_scope
from telephony.models import CallRecord, QueueOutcome
from tests.cli.sip_processes import (
    HOTLINE,
    edge_env,
    ready_operator,
    register_seat,
    sipp_out,
    start_edge,
)
from tests.conftest import wait_until
from tests.telephony.sip_peers import (
    HOST,
    RtpPeer,
    free_udp_port,
    output,
    run_sipp,
    start_sipp,
)
from tickets.models import Status, Ticket


def _env(tmp_path: Path) -> tuple[dict[str, str], int]:
    edge = edge_env(tmp_path, rtp_ports=8, extra={"HOTLINE_ACD__RING_TIMEOUT_S": "5"})
    return edge.env, edge.port


def test_given_an_operator_ready_at_a_registered_seat_when_a_citizen_calls_then_bridged(
    tmp_path,
):
    env, port = _env(tmp_path)
    made = subprocess.run(
        [str(HOTLINE), "seats", "add", "1001"], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stdout + made.stderr
    password = re.search(r"password: (\S+)", made.stdout)
    assert password
    factory = make_session_factory(
        make_engine(f"sqlite:///{(tmp_path / 'var' / 'core.db').resolve()}")
    )
    from tests.conftest import START

    operator_id = ready_operator(factory, START)

    proc, lines = start_edge(env)
    caller_rtp, agent_rtp = RtpPeer(), RtpPeer()
    phone = free_udp_port()
    try:
        register_seat(port, phone, password.group(1), lines)
        seat = start_sipp(
            "uas_agent_answer.xml", port=phone, keys={"rtp_port": agent_rtp.port}, timeout=40
        )
        caller = start_sipp(
            "uac_call.xml",
            target=f"{HOST}:{port}",
            keys={"rtp_port": caller_rtp.port, "fmts": "0 101"},
            hold=10000,
            timeout=40,
        )
        try:
            out, _ = caller.communicate(timeout=40)
            assert caller.returncode == 0, out[-2500:] + "".join(lines)
            seat_out, _ = seat.communicate(timeout=20)
            assert seat.returncode == 0, seat_out[-2500:] + "".join(lines)
        finally:
            for p in (seat, caller):
                if p.poll() is None:
                    sipp_out(p)

        def record() -> CallRecord | None:
            with factory() as s:
                ended = select(CallRecord).where(col(CallRecord.ended_at).is_not(None))
                return s.scalars(ended).first()

        wait_until(record, 15, message="the call's record ended")
        call = record()
        assert call is not None
        assert call.queue_outcome is QueueOutcome.agent, "".join(lines)
        assert (call.agent_user_id, call.agent_extension, call.rings) == (operator_id, "1001", 1)
        assert call.queued_at is not None and call.agent_answered_at is not None
        assert call.ticket_id is not None
        with factory() as s:
            ticket = s.get(Ticket, call.ticket_id)
        # The operator decides: a draft in intake, never dispatched by itself.
        assert ticket is not None and ticket.status is Status.intake
        assert call.recording_path and call.recording_path.endswith("-bridge.wav")
        recording = call.recording_path

        def stereo_frames() -> int:
            with wave.open(recording, "rb") as wav:
                assert wav.getnchannels() == 2  # caller | operator
                return wav.getnframes()

        # the bridge closes its file a moment after the edge reports the end
        talk = (call.ended_at - call.agent_answered_at).total_seconds()
        assert talk > 1.0, (call.answered_at, call.agent_answered_at, call.ended_at)
        wait_until(lambda: stereo_frames() >= 8000 * (talk - 0.5), 10, message="the talk recorded")
        with session_scope(factory) as session:
            state = agents.status(session, operator_id, START)
        assert state.state is AgentState.wrap_up and state.call_key == call.call_id
    finally:
        caller_rtp.close()
        agent_rtp.close()
        proc.terminate()
        proc.wait(30)


def test_given_nobody_signed_in_then_the_robot_answers_and_the_record_says_why(tmp_path):
    env, port = _env(tmp_path)
    factory = make_session_factory(
        make_engine(f"sqlite:///{(tmp_path / 'var' / 'core.db').resolve()}")
    )
    proc, lines = start_edge(env)
    rtp = RtpPeer()
    try:
        result = run_sipp(
            "uac_call.xml",
            target=f"{HOST}:{port}",
            keys={"rtp_port": rtp.port, "fmts": "0"},
            hold=2000,
            timeout=30,
        )
        assert result.returncode == 0, output(result) + "".join(lines)

        def records() -> list[CallRecord]:
            with factory() as s:
                return list(s.scalars(select(CallRecord)))

        wait_until(records, 15, message="the call's record")
        (call,) = records()
        assert (call.queue_outcome, call.overflow_reason) == (QueueOutcome.robot, "no_agents")
        assert call.queued_at is None and call.agent_user_id is None
        assert call.ticket_id is not None
    finally:
        rtp.close()
        proc.terminate()
        proc.wait(30)
