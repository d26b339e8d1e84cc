"""SIGTERM of `hotline sip` mid-call, as a restart would send it: the edge drains — new
calls get 503 with Retry-After, the live call is ended by the edge (after the apology) with
a record — and the process exits 0."""

from __future__ import annotations

import signal

from sqlalchemy import select

from core.db import make_engine, make_session_factory
from telephony.endpoint import Disposition
from telephony.models import CallRecord
from tests.cli.sip_processes import edge_env, sipp_out, start_edge
from tests.conftest import wait_until
from tests.telephony.sip_peers import (
    HOST,
    RtpPeer,
    output,
    run_sipp,
    start_sipp,
)


def test_given_a_live_call_when_the_edge_gets_sigterm_then_new_calls_get_503_and_the_call_is_ended_with_a_record(  # noqa: E501
    tmp_path,
):
    edge = edge_env(tmp_path, rtp_ports=4, extra={"HOTLINE_TELEPHONY__DRAIN_TIMEOUT_S": "3"})
    env, port = edge.env, edge.port
    engine = make_engine(edge.db_url)
    factory = make_session_factory(engine)

    def records() -> list[CallRecord]:
        with factory() as s:
            return list(s.scalars(select(CallRecord)))

    rtp = RtpPeer()
    proc, lines = start_edge(env)
    long_call = start_sipp(
        "uac_call.xml",
        target=f"{HOST}:{port}",
        keys={"rtp_port": rtp.port, "fmts": "0"},
        hold=60000,
        timeout=90,
    )
    try:
        try:
            wait_until(lambda: records(), 30, message="the call being answered")
        except AssertionError:
            raise AssertionError("".join(lines) + sipp_out(long_call)) from None
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "draining the SIP edge" in "".join(lines), 10, message="the drain")
        trace = tmp_path / "busy.log"
        busy = run_sipp(
            "uac_busy.xml", target=f"{HOST}:{port}", keys={"rtp_port": rtp.port}, trace=trace
        )
        assert busy.returncode == 0, output(busy) + "".join(lines)
        assert "Retry-After:" in trace.read_text("utf-8", "replace")
        # the drain timeout (3 s), the apology, the hang-up: well within 20 s
        assert proc.wait(20) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        long_call.kill()
        long_call.communicate(timeout=10)
        rtp.close()

    out = "".join(lines)
    assert "apologising" in out, out
    by_disposition = {r.disposition: r for r in records()}
    answered = by_disposition[Disposition.COMPLETED]
    assert answered.answered_at is not None and answered.ended_at is not None
    assert (answered.ended_at - answered.answered_at).total_seconds() < 30
    assert by_disposition[Disposition.REFUSED].ended_at is not None
    engine.dispose()
