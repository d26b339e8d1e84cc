"""End to end over the real SIP edge: sipp places the call, a raw RTP peer speaks Korean in
G.711 μ-law, the edge answers into the platform's hooks, live Vosk transcribes, the rules
dispatch — and the call record holds it all."""

from __future__ import annotations

import queue
import wave
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asr.offline import transcribe_wav
from hotline.calls import hints as call_hints
from hotline.calls import setup
from telephony import codecs
from telephony.endpoint import CallState, Disposition
from telephony.flows import serve_inbound
from telephony.models import CallRecord, TranscribedBy
from telephony.prompts import PromptSet
from telephony.recording import EndpointerSettings
from telephony.rtp_packet import build_rtp
from telephony.sip_config import SipConfig
from telephony.sip_edge import SipEdge
from tests.conftest import wait_until
from tests.hotline.conftest import LEAK, LEAK_KEYWORD_ULAW, frames_of, lead_unit, ticket_of
from tests.telephony.fakes import FakePrompts, silence
from tests.telephony.sip_peers import HOST, RtpPeer, start_sipp
from tickets.models import Status


def start_platform_edge(
    services, prompts, settings, endpointer: EndpointerSettings | None = None
) -> tuple[SipEdge, queue.Queue]:
    """A real SIP edge on loopback serving inbound calls with the platform's hooks; the
    queue receives each call as it is answered. ``endpointer``: when the robot takes the
    report as ended (a test whose caller may stall on a loaded machine gives it longer)."""
    answered: queue.Queue = queue.Queue()
    flow = setup.flow_settings(settings)
    if endpointer is not None:
        flow = replace(flow, endpointer=endpointer)
    serve = partial(serve_inbound, prompts=prompts, hooks=services.hooks(), settings=flow)

    def on_call(call) -> None:
        answered.put(call)
        serve(call)

    edge = SipEdge(SipConfig(host=HOST, port=0, rtp_low=30000, rtp_high=40000))
    edge.start(on_call=on_call, on_ended=services.on_ended)
    return edge, answered


def answered_call(answered: queue.Queue, sipp) -> Any:
    """The call the edge answered for ``sipp``; when none comes, the failure shows sipp's
    screen (a peer that could not start, a request refused) instead of a bare queue.Empty."""
    try:
        return answered.get(timeout=20)
    except queue.Empty:
        sipp.kill()
        out, _ = sipp.communicate(timeout=10)
        raise AssertionError(f"no call answered within 20 s; sipp:\n{out[-2500:]}") from None


@pytest.fixture
def rtp():
    peer = RtpPeer()
    yield peer
    peer.close()


@pytest.mark.parametrize("decoding", ["decoder processes", "threads of the SIP process"])
def test_given_a_sip_caller_speaking_korean_then_the_ticket_is_transcribed_live_and_dispatched(
    db, make_services, recognizer, settings, rtp, decoding, request
):
    live = (
        request.getfixturevalue("decoder_processes")
        if decoding == "decoder processes"
        else recognizer
    )
    services = make_services(live)
    edge, answered = start_platform_edge(services, FakePrompts(), settings)
    sipp = start_sipp(
        "uac_call.xml",
        target=f"{HOST}:{edge.address[1]}",
        keys={"rtp_port": rtp.port, "fmts": "0"},
        hold=30000,
    )
    try:
        call = answered_call(answered, sipp)
        wait_until(lambda: call.state == CallState.LISTENING, 10, message="listening")
        rtp.send(
            (HOST, call.rtp_port),
            b"".join(frames_of(LEAK) + silence(2500)),
            payload_type=codecs.PCMU,
        )

        def ended():
            record = db.one(CallRecord, CallRecord.call_id == call.call_id)
            return record.transcript is not None and record.ended_at is not None

        wait_until(ended, 30, message="the call transcribed and ended")
        services.drain()
    finally:
        edge.stop()
        sipp.kill()
        sipp.communicate(timeout=10)

    ticket, record = ticket_of(db, call.call_id)
    offline = transcribe_wav(recognizer=recognizer, path=Path(record.recording_path)).text
    assert LEAK_KEYWORD_ULAW in offline
    assert record.transcript == offline and record.transcribed_by is TranscribedBy.live
    assert (record.codec, record.caller_number) == ("PCMU", "13800000000")
    assert record.disposition is Disposition.COMPLETED and record.talk_s > 0
    assert ticket.status == Status.dispatched and lead_unit(db, ticket.id) == "WATER"
    assert ticket.caller_phone == "13800000000"


def best_lag_correlation(reference: bytes, recording: bytes) -> float:
    """The normalised cross-correlation of `reference` with the stretch of `recording` it
    matches best (both PCM16), computed over every lag with FFTs."""
    ref = np.frombuffer(reference, "<i2").astype(np.float64)
    rec = np.frombuffer(recording, "<i2").astype(np.float64)
    n = len(ref) + len(rec)
    size = 1 << (n - 1).bit_length()
    cross = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size)), size)
    lag = int(np.argmax(cross[: len(rec) - len(ref) + 1]))
    window = rec[lag : lag + len(ref)]
    return float(np.dot(ref, window) / (np.linalg.norm(ref) * np.linalg.norm(window)))


@pytest.fixture(scope="session")
def korean_prompts(tmp_path_factory) -> PromptSet:
    prompts = PromptSet(tmp_path_factory.mktemp("prompts"), language="ko")
    prompts.ensure(["greeting", "closing", "no_speech"])
    return prompts


def test_given_a_sip_caller_then_the_recording_is_what_was_sent_and_the_caller_heard_the_greeting(
    db, make_services, settings, rtp, korean_prompts
):
    services = make_services(None)
    edge, answered = start_platform_edge(services, korean_prompts, settings)
    sipp = start_sipp(
        "uac_call.xml",
        target=f"{HOST}:{edge.address[1]}",
        keys={"rtp_port": rtp.port, "fmts": "0"},
        hold=30000,
    )
    speech = b"".join(frames_of(LEAK))
    try:
        call = answered_call(answered, sipp)
        wait_until(lambda: call.state == CallState.LISTENING, 10, message="listening")
        rtp.send((HOST, call.rtp_port), speech + b"".join(silence(2500)), payload_type=codecs.PCMU)
        wait_until(
            lambda: db.one(CallRecord, CallRecord.call_id == call.call_id).ended_at is not None,
            30,
            message="the report ended",
        )
        services.drain()
    finally:
        edge.stop()
        sipp.kill()
        sipp.communicate(timeout=10)

    record = db.one(CallRecord, CallRecord.call_id == call.call_id)
    with wave.open(record.recording_path) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        recorded = wav.readframes(wav.getnframes())
    sent = codecs.ulaw_decode(codecs.ulaw_encode(speech))  # what crossed the wire
    assert best_lag_correlation(sent, recorded) > 0.99
    greeting = korean_prompts.pcm("greeting")
    heard = rtp.received_audio(codecs.PCMU)
    assert best_lag_correlation(codecs.ulaw_decode(codecs.ulaw_encode(greeting)), heard) > 0.99


def test_given_a_caller_hanging_up_during_the_greeting_then_a_queued_ticket_and_the_next_call_works_after_rtp_garbage(  # noqa: E501
    db, make_services, settings, rtp, korean_prompts
):
    services = make_services(None)
    edge, answered = start_platform_edge(services, korean_prompts, settings)
    target = f"{HOST}:{edge.address[1]}"
    try:
        # The greeting lasts seconds; this caller hangs up after 0.3 s of it, having sent
        # garbage on the media port first: a 1-byte packet, RTP version 1, and an event on a
        # payload type that was never negotiated.
        hasty = start_sipp(
            "uac_call.xml", target=target, keys={"rtp_port": rtp.port, "fmts": "0"}, hold=300
        )
        first = answered.get(timeout=10)
        for junk in (
            b"\x80",
            b"\x40" + bytes(171),
            build_rtp(
                payload_type=101,
                sequence=1,
                timestamp=0,
                ssrc=7,
                payload=bytes([200, 0x80, 0, 160]),
            ),
        ):
            rtp.sock.sendto(junk, (HOST, first.rtp_port))
        media = first._media  # the call's RtpSession: the junk is counted, not fatal
        wait_until(
            lambda: media.stats["malformed"] + media.stats["other_payload"] >= 3,
            5,
            message="the junk counted",
        )
        hasty.communicate(timeout=20)
        assert hasty.returncode == 0
        wait_until(
            lambda: db.one(CallRecord, CallRecord.call_id == first.call_id).ended_at is not None,
            15,
            message="the first call's record",
        )
        services.drain()
        # the next caller is answered and heard as usual
        rtp.packets.clear()
        second_sipp = start_sipp(
            "uac_call.xml", target=target, keys={"rtp_port": rtp.port, "fmts": "0"}, hold=1500
        )
        second = answered.get(timeout=10)
        second_sipp.communicate(timeout=20)
        assert second_sipp.returncode == 0
        assert rtp.received_audio(codecs.PCMU)  # the greeting reached the second caller
    finally:
        edge.stop()

    ticket, record = ticket_of(db, first.call_id)
    assert record.disposition is Disposition.CALLER_HUNG_UP and record.recording_path is None
    assert ticket.status == Status.pending_dispatch and ticket.description == call_hints.NO_SPEECH
    assert second.call_id != first.call_id
