"""`kill -9` of `hotline sip` mid-call, as an operator would suffer it: the next start closes
the call from its recording and queues its transcription."""

from __future__ import annotations

import signal
import wave
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from core.db import make_engine, make_session_factory
from hotline.calls.recovery import EDGE_LOST
from telephony import codecs
from telephony.models import CallRecord
from tests.cli.sip_processes import edge_env, sipp_out, start_edge
from tests.conftest import wait_until
from tests.hotline.conftest import LEAK, frames_of
from tests.telephony.fakes import silence
from tests.telephony.sip_peers import HOST, RtpPeer, start_sipp


def test_given_an_edge_killed_mid_call_when_it_starts_again_then_the_call_is_closed_repaired_and_queued(  # noqa: E501
    tmp_path,
):
    edge = edge_env(tmp_path, rtp_ports=2)  # one RTP port: the test knows where to send
    env, port, media, data_dir = edge.env, edge.port, edge.media, edge.data_dir
    engine = make_engine(edge.db_url)
    factory = make_session_factory(engine)

    def record() -> CallRecord | None:
        with factory() as s:
            return s.scalars(select(CallRecord)).first()

    rtp = RtpPeer()
    proc, lines = start_edge(env)
    sipp = start_sipp(
        "uac_call.xml",
        target=f"{HOST}:{port}",
        keys={"rtp_port": rtp.port, "fmts": "0"},
        hold=60000,
        timeout=90,
    )
    second = None
    try:

        def recording() -> Path | None:
            r = record()
            path = Path(r.recording_path) if r and r.recording_path else None
            return path if path is not None and path.is_file() else None

        try:
            path = wait_until(recording, 60, message="the report being recorded")
        except AssertionError:
            raise AssertionError("".join(lines) + sipp_out(sipp)) from None
        assert isinstance(path, Path)
        rtp.send((HOST, media), b"".join(frames_of(LEAK) + silence(3000)), payload_type=codecs.PCMU)
        wait_until(lambda: path.stat().st_size > 44 + 3 * 16000, 30, message="3 s recorded")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed = record()
        assert killed is not None and killed.ended_at is None

        second, lines2 = start_edge(env)
        assert "1 lost call(s) recovered" in "".join(lines2)
        # Then what start-up made is kept out of the collector's full passes (core.runtime).
        wait_until(
            lambda: (
                "start-up objects kept out of the garbage collector's full passes"
                in "".join(lines2)
            ),
            30,
            message="the start-up objects frozen",
        )
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, "".join(lines2)
    finally:
        for p in (proc, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        sipp.kill()
        sipp.communicate(timeout=10)
        rtp.close()

    closed = record()
    assert closed is not None and closed.ended_at is not None and closed.answered_at is not None
    assert closed.end_reason == EDGE_LOST
    with wave.open(str(path)) as w:
        frames, rate = w.getnframes(), w.getframerate()
    assert 44 + frames * 2 == path.stat().st_size  # the header covers all the audio on disk
    assert closed.ended_at == closed.answered_at + timedelta(seconds=frames / rate)
    queued = [
        f.read_text("utf-8", "replace") for f in (data_dir / "broker").rglob("*") if f.is_file()
    ]
    assert [m for m in queued if "calls.transcribe_recording" in m and closed.call_id in m]
    engine.dispose()
