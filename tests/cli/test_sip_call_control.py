"""The console's transfer through the real `hotline sip` (issue 17): two operators' phones
(sipp) register with their seats, a citizen's call (sipp) is bridged to the first; the
console's command — written to the database as the page writes it — reaches the edge, which
rings the second seat, hands the caller over and hangs up the first operator's leg. The
records say so: the command done, the call's controls "completed", the first operator in
wrap-up at once, the second on the call and in wrap-up after the caller hangs up, one
transfer counted on the call."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime

from sqlalchemy import select
from sqlmodel import col

from accounts import agents
from accounts.models import AgentState, Role
from accounts.service import create_user
from core.db import make_engine, make_session_factory, saved_id, session_scope
from hotline.calls import call_control as cc
from telephony.models import CallCommand, CallCommandKind, CallRecord, QueueOutcome
from tests.cli.sip_processes import HOTLINE, edge_env, sipp_out, start_edge
from tests.conftest import START, wait_until
from tests.telephony.sip_peers import HOST, RtpPeer, free_udp_port, output, run_sipp, start_sipp


def _seat(env: dict[str, str], extension: str) -> str:
    made = subprocess.run(
        [str(HOTLINE), "seats", "add", extension], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stdout + made.stderr
    password = re.search(r"password: (\S+)", made.stdout)
    assert password
    return password.group(1)


def test_given_a_bridged_call_when_the_console_transfers_it_then_the_colleague_takes_it(
    tmp_path,
):
    edge = edge_env(
        tmp_path,
        rtp_ports=12,
        extra={"HOTLINE_ACD__RING_TIMEOUT_S": "5", "HOTLINE_ACD__WRAP_UP_S": "60"},
    )
    env, port = edge.env, edge.port
    passwords = {ext: _seat(env, ext) for ext in ("1001", "1002")}
    factory = make_session_factory(make_engine(edge.db_url))
    ids: dict[str, int] = {}
    with session_scope(factory) as session:
        for name, ext in (("li", "1001"), ("wang", "1002")):
            user, _ = create_user(
                session, username=name, display_name=name, role=Role.operator, now=START
            )
            session.flush()
            agents.sign_in(session, user, ext, "", START)
            ids[name] = saved_id(user)
        agents.set_ready(session, ids["li"], START)  # li first: the longest idle
    proc, lines = start_edge(env)
    caller_rtp, li_rtp, wang_rtp = RtpPeer(), RtpPeer(), RtpPeer()
    phones = {ext: free_udp_port() for ext in passwords}
    sipps: list[subprocess.Popen] = []
    try:
        for ext, phone in phones.items():
            registered = run_sipp(
                "uac_register.xml",
                target=f"{HOST}:{port}",
                service=ext,
                port=phone,
                keys={"contact": f"<sip:{ext}@{HOST}:{phone}>", "expires": 300},
                extra=["-au", ext, "-ap", passwords[ext]],
                timeout=5,
            )
            assert registered.returncode == 0, output(registered) + "".join(lines)
        li_phone = start_sipp(
            "uas_agent_answer.xml", port=phones["1001"], keys={"rtp_port": li_rtp.port}, timeout=40
        )
        wang_phone = start_sipp(
            "uas_agent_answer.xml",
            port=phones["1002"],
            keys={"rtp_port": wang_rtp.port},
            timeout=40,
        )
        caller = start_sipp(
            "uac_call.xml",
            target=f"{HOST}:{port}",
            keys={"rtp_port": caller_rtp.port, "fmts": "0 101"},
            hold=9000,
            timeout=40,
        )
        sipps = [li_phone, wang_phone, caller]

        def bridged() -> CallRecord | None:
            with factory() as s:
                return s.scalars(
                    select(CallRecord).where(col(CallRecord.queue_outcome) == QueueOutcome.agent)
                ).first()

        call = wait_until(bridged, 20, message="the call bridged to li")
        assert isinstance(call, CallRecord) and call.agent_user_id == ids["li"]
        with session_scope(factory) as session:
            agents.set_ready(session, ids["wang"], START)
            command_id = saved_id(
                cc.request(
                    session,
                    call_id=call.call_id,
                    kind=CallCommandKind.transfer,
                    target="1002",
                    user_id=ids["li"],
                    role=Role.operator,
                    now=datetime.now(UTC),  # the edge's clock: a command is new to it
                )
            )

        def controls() -> cc.Controls:
            with factory() as s:
                record = s.scalars(
                    select(CallRecord).where(col(CallRecord.call_id) == call.call_id)
                ).one()
                return cc.Controls.parse(record.control)

        try:
            wait_until(
                lambda: (controls().transfer or {}).get("outcome") == "completed",
                20,
                message="the transfer completed",
            )
        except AssertionError as exc:  # what the command, the record and the edge said then
            with factory() as s:
                found = s.get(CallCommand, command_id)
                said = None if found is None else (found.state, found.detail, found.done_at)
            raise AssertionError(
                f"{exc}; command {said}; controls {controls()}\n" + "".join(lines[-40:])
            ) from exc

        def command() -> CallCommand | None:
            with factory() as s:
                found = s.get(CallCommand, command_id)
                return found if found is not None and found.done_at is not None else None

        taken = wait_until(command, 10, message="the command's result")
        assert isinstance(taken, CallCommand) and taken.detail == "ringing"
        li_out, _ = li_phone.communicate(timeout=20)  # li's leg got its BYE
        assert li_phone.returncode == 0, li_out[-2500:] + "".join(lines)
        with session_scope(factory) as session:
            assert agents.status(session, ids["li"], START).state is AgentState.wrap_up
            assert agents.status(session, ids["wang"], START).state is AgentState.on_call

        out, _ = caller.communicate(timeout=40)
        assert caller.returncode == 0, out[-2500:] + "".join(lines)
        wang_out, _ = wang_phone.communicate(timeout=20)
        assert wang_phone.returncode == 0, wang_out[-2500:] + "".join(lines)

        def ended() -> CallRecord | None:
            with factory() as s:
                record = s.scalars(
                    select(CallRecord).where(col(CallRecord.call_id) == call.call_id)
                ).one()
                return record if record.ended_at and record.transfers is not None else None

        done = wait_until(ended, 15, message="the call's end written")
        assert isinstance(done, CallRecord) and done.transfers == 1

        def wang() -> AgentState:
            with session_scope(factory) as session:
                return agents.status(session, ids["wang"], START).state

        wait_until(lambda: wang() is AgentState.wrap_up, 10, message="wang in wrap-up")
    finally:
        for p in sipps:
            if p.poll() is None:
                sipp_out(p)
        for rtp in (caller_rtp, li_rtp, wang_rtp):
            rtp.close()
        proc.terminate()
        proc.wait(30)
