"""A raw RTP peer on loopback for the media tests, and what those tests share: sessions made
against it, speech-like audio, reading and comparing it. Every port comes from the OS or the
allocator, so parallel workers never collide. The ``peer`` and ``sessions`` fixtures are in
``conftest.py``."""

from __future__ import annotations

import socket
import time

import numpy as np

from telephony import codecs
from telephony.endpoint import FRAME_BYTES
from telephony.rtp_packet import build_rtp
from telephony.rtp_session import RtpSession

HOST = "127.0.0.1"
DTMF_PT = 101


class Peer:
    """The far end: a bare UDP socket that speaks RTP by hand."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(2)
        self.address = self.sock.getsockname()
        self.seq = 65_500  # wraps too
        self.ts = 4_294_960_000  # wraps within the first second: unwrapping is exercised
        self.ssrc = 0x1234ABCD

    def send_raw(self, to: tuple[str, int], data: bytes) -> None:
        self.sock.sendto(data, to)

    def send_audio(
        self, to, payload: bytes, *, pt: int, skip: bool = False, marker: bool = False
    ) -> None:
        if not skip:
            self.sock.sendto(
                build_rtp(
                    payload_type=pt,
                    sequence=self.seq,
                    timestamp=self.ts,
                    ssrc=self.ssrc,
                    payload=payload,
                    marker=marker,
                ),
                to,
            )
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + len(payload)) & 0xFFFFFFFF

    def receive(self) -> bytes:
        return self.sock.recvfrom(4096)[0]

    def close(self) -> None:
        self.sock.close()


def new_session(peer: Peer, *, pt: int = codecs.PCMU, **kwargs) -> RtpSession:
    return RtpSession(
        local_host=HOST,
        port=0,
        sock=None,
        remote=peer.address,
        payload_type=pt,
        dtmf_payload_type=DTMF_PT,
        **kwargs,
    )


def speechlike(seconds: float, amplitude: float = 8000) -> np.ndarray:
    t = np.arange(int(8000 * seconds)) / 8000
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
    signal = sum(
        np.sin(2 * np.pi * f * t + f) / k for k, f in enumerate((220, 470, 1130, 2250), start=1)
    )
    return (amplitude * envelope * signal / 2).astype(np.int16)


def read_all(session: RtpSession, frames: int, timeout: float = 5.0) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < frames * FRAME_BYTES and time.monotonic() < deadline:
        frame = session.read_frame(0.2)
        assert frame is not None
        out += frame
    return bytes(out)


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    noise = decoded.astype(float) - reference.astype(float)
    return 10 * np.log10(np.sum(reference.astype(float) ** 2) / np.sum(noise**2))
