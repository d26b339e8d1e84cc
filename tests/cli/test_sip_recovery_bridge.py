"""`kill -9` of `hotline sip` while a citizen talks to an operator (issue 17's crash test, by
issue 15's rule): the real edge with a registered seat and its operator ready, a sipp caller
bridged to the seat's sipp phone, audio both ways; the edge is killed mid-bridge and started
again on the same host. Nothing is left stuck or lost: the call closed as edge_lost up to the
stereo file's last second, the file repaired with each side in its channel, the operator out
of the call, the transcription queued — and, run as the worker would, the caller's words on
the operator's draft, which stays theirs."""

from __future__ import annotations

import re
import signal
import subprocess
import wave
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select

from accounts import agents
from accounts.models import AgentState, Role
from accounts.service import create_user
from core.clock import SystemClock
from core.db import make_engine, make_session_factory, saved_id, session_scope
from core.settings import Settings
from hotline.calls import intake
from hotline.calls.recovery import EDGE_LOST
from telephony.models import CallRecord, QueueOutcome, TranscribedBy
from tests.asr.conftest import vosk_model_dir  # noqa: F401 - the fixture full_recognizer needs
from tests.cli.sip_processes import HOTLINE, edge_env, register_seat, sipp_out, start_edge
from tests.conftest import START, wait_until
from tests.hotline.conftest import LEAK, frames_of, full_recognizer  # noqa: F401 - a fixture
from tests.telephony.bridge_audio import best_lag_correlation, noise, on_the_wire, paced_send
from tests.telephony.sip_peers import HOST, RtpPeer, free_udp_port, start_sipp
from tickets.models import Status, Ticket

STEREO_BYTES_PER_S = 8000 * 2 * 2


def test_given_an_edge_killed_mid_bridge_when_it_starts_again_then_call_recording_operator_and_draft_recover(  # noqa: E501
    tmp_path, full_recognizer
):
    # A fresh edge hands out its RTP ports in order: the caller's leg the first, the leg it
    # dials to the seat the next.
    edge = edge_env(tmp_path, rtp_ports=4, extra={"HOTLINE_ACD__RING_TIMEOUT_S": "5"})
    caller_port, seat_port = edge.media, edge.media + 2
    made = subprocess.run(
        [str(HOTLINE), "seats", "add", "1001"], env=edge.env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stdout + made.stderr
    password = re.search(r"password: (\S+)", made.stdout)
    assert password
    engine = make_engine(edge.db_url)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        user, _ = create_user(
            session, username="li", display_name="李", role=Role.operator, now=START
        )
        session.flush()
        agents.sign_in(session, user, "1001", "", START)
        agents.set_ready(session, saved_id(user), START)
        operator_id = saved_id(user)

    def record() -> CallRecord | None:
        with factory() as s:
            return s.scalars(select(CallRecord)).first()

    proc, lines = start_edge(edge.env)
    caller_rtp, seat_rtp = RtpPeer(), RtpPeer()
    phone = free_udp_port()
    seat = caller = second = None
    # Both sides still talking when the edge is killed: 5 s each, the kill after 3 s.
    said_by_caller = b"".join(frames_of(LEAK)).ljust(5 * 16000, b"\0")[: 5 * 16000]
    said_by_operator = noise(5.0, 7)
    try:
        register_seat(edge.port, phone, password.group(1), lines)
        # The seat's phone hangs up 10 s after answering without a BYE: the kill comes first.
        seat = start_sipp(
            "uas_agent_answer.xml", port=phone, keys={"rtp_port": seat_rtp.port}, timeout=60
        )
        caller = start_sipp(
            "uac_call.xml",
            target=f"{HOST}:{edge.port}",
            keys={"rtp_port": caller_rtp.port, "fmts": "0 101"},
            hold=60000,
            timeout=90,
        )

        def bridged() -> Path | None:
            r = record()
            if r is None or r.agent_answered_at is None or not r.recording_path:
                return None
            path = Path(r.recording_path)
            return path if path.is_file() else None

        try:
            path = wait_until(bridged, 60, message="the caller bridged to the operator")
        except AssertionError:
            raise AssertionError("".join(lines) + sipp_out(caller) + sipp_out(seat)) from None
        assert isinstance(path, Path)
        with session_scope(factory) as session:
            assert agents.status(session, operator_id, START).state is AgentState.on_call
        senders = [
            paced_send(caller_rtp, (HOST, caller_port), said_by_caller, 0x1111),
            paced_send(seat_rtp, (HOST, seat_port), said_by_operator, 0x2222),
        ]
        wait_until(
            lambda: path.stat().st_size >= 44 + 3 * STEREO_BYTES_PER_S,
            10,
            message="3 s of talk recorded",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for sender in senders:
            sender.join(10)
        killed = record()
        assert killed is not None and killed.ended_at is None

        second, lines2 = start_edge(edge.env)
        assert "1 lost call(s) recovered" in "".join(lines2), "".join(lines2)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, "".join(lines2)
    finally:
        for p in (proc, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        for sipp in (seat, caller):
            if sipp is not None:
                sipp_out(sipp)
        caller_rtp.close()
        seat_rtp.close()

    closed = record()
    assert closed is not None and closed.agent_answered_at is not None
    assert closed.end_reason == EDGE_LOST
    assert (closed.queue_outcome, closed.agent_user_id) == (QueueOutcome.agent, operator_id)
    with wave.open(str(path)) as w:
        channels, frames, rate = w.getnchannels(), w.getnframes(), w.getframerate()
        samples = np.frombuffer(w.readframes(frames), "<i2")
    assert channels == 2 and 44 + frames * 4 == path.stat().st_size  # header covers it all
    assert closed.ended_at == closed.agent_answered_at + timedelta(seconds=frames / rate)
    left, right = samples[0::2].tobytes(), samples[1::2].tobytes()
    assert frames >= 3 * rate
    # each side in its own channel (what was said in the first 2 s, wherever it begins)
    to_left = best_lag_correlation(on_the_wire(said_by_caller[: 2 * 16000]), left)
    to_right = best_lag_correlation(on_the_wire(said_by_operator[: 2 * 16000]), right)
    assert to_left >= 0.95 and to_right >= 0.95, (to_left, to_right)

    with session_scope(factory) as session:
        state = agents.status(session, operator_id, START)
        moves = [c for c in agents.changes_of(session, operator_id) if c.source == "reconciler"]
    assert state.state in (AgentState.wrap_up, AgentState.ready), state
    assert [(m.from_state, m.to_state, m.call_key) for m in moves] == [
        (AgentState.on_call, AgentState.wrap_up, closed.call_id)
    ]

    queued = [
        f.read_text("utf-8", "replace")
        for f in (edge.data_dir / "broker").rglob("*")
        if f.is_file()
    ]
    assert [m for m in queued if "calls.transcribe_recording" in m and closed.call_id in m]
    # The queued task's body, as the worker runs it: the caller's channel onto the draft.
    intake.transcribe_recording(
        session_factory=factory,
        recognizer=full_recognizer,
        call_id=closed.call_id,
        clock=SystemClock(),
        settings=Settings(environment="test", data_dir=edge.data_dir),
    )
    with factory() as s:
        done = s.scalars(select(CallRecord)).one()
        ticket = s.get(Ticket, done.ticket_id)
    assert done.transcribed_by is TranscribedBy.offline and done.transcript
    assert ticket is not None and done.transcript in ticket.description
    assert ticket.status is Status.intake  # the operator's to decide, never dispatched
    engine.dispose()
