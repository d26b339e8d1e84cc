"""A report flow over a real RtpSession on loopback: pacing, silence and the recording in
real time (≈ 3 s), where the FakeCall tests simulate time."""

from __future__ import annotations

import queue
import socket
import threading
import time
import wave
from datetime import datetime
from pathlib import Path

import numpy as np

from telephony import codecs
from telephony.endpoint import FRAME_BYTES, CallDirection, CallState, Disposition, check_transition
from telephony.flows import FlowHooks, FlowSettings, serve_inbound
from telephony.recording import EndpointerSettings, EndReason
from telephony.rtp_packet import build_rtp, parse_rtp
from telephony.rtp_session import RtpSession
from tests.telephony.fakes import START, FakePrompts, silence, speech

HOST = "127.0.0.1"


class RtpCall:
    """The least Call over an RtpSession (the SIP edge's SipCall is the real one)."""

    def __init__(self, media: RtpSession) -> None:
        self.media = media
        self.call_id = "rtp-call-1"
        self.direction = CallDirection.INBOUND
        self.local_uri = self.remote_uri = "sip:x@127.0.0.1"
        self.remote_number = "x"
        self.codec = media.codec
        self.state = CallState.ANSWERED
        self.disposition: Disposition | None = None
        self.arrived_at = START
        self.answered_at: datetime | None = START
        self.ended_at: datetime | None = None
        self.ended = threading.Event()
        self._keys: queue.Queue[str] = queue.Queue()

    def set_state(self, state):
        check_transition(self.state, state)
        self.state = state

    def read_frame(self, timeout):
        return self.media.read_frame(timeout)

    def send_audio(self, pcm):
        self.media.send_audio(pcm)

    def wait_sent(self, timeout=None):
        return self.media.wait_sent(timeout)

    def clear_audio(self):
        self.media.clear_audio()

    def read_dtmf(self, timeout):
        try:
            return self._keys.get(timeout=timeout)
        except queue.Empty:
            return None

    def hangup(self):
        if not self.ended.is_set():
            self.disposition = Disposition.COMPLETED
            self.state = CallState.ENDED
            self.ended.set()


def test_given_a_real_rtp_caller_when_reporting_then_recording_matches_what_was_said(
    tmp_path: Path,
):
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((HOST, 0))
    peer.settimeout(0.5)
    media = RtpSession(
        local_host=HOST,
        port=0,
        sock=None,
        remote=peer.getsockname(),
        payload_type=codecs.PCMA,
        dtmf_payload_type=None,
    )
    media.start()
    call = RtpCall(media)
    said = silence(300) + speech(1000) + silence(1500)
    finished = []

    def caller() -> None:
        started = time.monotonic()
        for n, frame in enumerate(said):
            peer.sendto(
                build_rtp(
                    payload_type=codecs.PCMA,
                    sequence=n,
                    timestamp=160 * n,
                    ssrc=7,
                    payload=codecs.alaw_encode(frame),
                ),
                media.local_address,
            )
            delay = started + (n + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # a phone's real-time pace

    sender = threading.Thread(target=caller)
    sender.start()
    prompts = FakePrompts()
    settings = FlowSettings(
        recording_dir=tmp_path, endpointer=EndpointerSettings(end_silence_s=0.8)
    )
    try:
        serve_inbound(
            call,
            prompts=prompts,
            settings=settings,
            hooks=FlowHooks(on_finished=lambda c, p, r: finished.append((p, r))),
        )
        sender.join()
        media.stop()  # it would send comfort silence for ever
        heard = []
        while True:
            try:
                heard.append(parse_rtp(peer.recvfrom(2048)[0]))
            except TimeoutError:
                break
    finally:
        media.stop()
        peer.close()

    path, reason = finished[0]
    assert reason is EndReason.SILENCE
    with wave.open(str(path), "rb") as w:
        recorded = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert len(recorded) / 8000 == np.round(len(recorded) / 8000, 2)  # whole frames
    frames = recorded.reshape(-1, FRAME_BYTES // 2)
    loud = np.flatnonzero(np.abs(frames).mean(axis=1) > 1000)
    assert len(loud) == 50  # all of the second of speech, none lost
    assert np.all(np.diff(loud) == 1)
    # The greeting, beep and closing went out as A-law on the one stream we send.
    audio = b"".join(codecs.alaw_decode(p.payload) for p in heard)
    assert {p.payload_type for p in heard} == {codecs.PCMA}
    for name in ("greeting", "beep", "closing"):
        assert prompts.pcm(name)[:320] in audio or _close(prompts.pcm(name), audio)


def _close(pcm: bytes, audio: bytes) -> bool:
    """A-law is lossy: look for a frame of the prompt's constant level."""
    level = int(np.frombuffer(pcm[:2], "<i2")[0])
    decoded = np.frombuffer(audio, "<i2").reshape(-1, 160)
    return bool(np.any(np.all(np.abs(decoded - level) < level * 0.07, axis=1)))
