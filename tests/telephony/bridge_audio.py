"""Audio for the bridge's tests over real SIP (test_bridge_sip, test_transfer_sip): band-limited
noise each side speaks, sent as a phone sends it, and how faithfully it arrived."""

from __future__ import annotations

import threading
import time

import numpy as np

from telephony import codecs
from telephony.endpoint import FRAME_BYTES
from telephony.rtp_packet import build_rtp
from tests.telephony.sip_peers import RtpPeer


def best_lag_correlation(reference: bytes, recording: bytes) -> float:
    """The normalised cross-correlation of ``reference`` with the stretch of ``recording`` it
    matches best (both PCM16), over every lag with FFTs."""
    ref = np.frombuffer(reference, "<i2").astype(np.float64)
    rec = np.frombuffer(recording, "<i2").astype(np.float64)
    n = len(ref) + len(rec)
    size = 1 << (n - 1).bit_length()
    cross = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size)), size)
    lag = int(np.argmax(cross[: len(rec) - len(ref) + 1]))
    window = rec[lag : lag + len(ref)]
    norm = np.linalg.norm(ref) * np.linalg.norm(window)
    return float(np.dot(ref, window) / norm) if norm else 0.0


def noise(seconds: float, seed: int) -> bytes:
    """Band-limited noise: no lag but the true one correlates with it."""
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal(int(8000 * seconds) + 8)
    smooth = np.convolve(raw, np.ones(4) / 4, mode="valid")[: int(8000 * seconds)]
    return (3000 * smooth).clip(-30000, 30000).astype("<i2").tobytes()


def on_the_wire(pcm: bytes) -> bytes:
    return codecs.ulaw_decode(codecs.ulaw_encode(pcm))


def paced_send(peer: RtpPeer, to: tuple[str, int], pcm: bytes, ssrc: int) -> threading.Thread:
    """Send ``pcm`` as a phone does: one 20 ms packet every 20 ms, on an absolute schedule."""

    def run() -> None:
        start = time.monotonic()
        for i, offset in enumerate(range(0, len(pcm), FRAME_BYTES)):
            delay = start + 0.02 * i - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            payload = codecs.ulaw_encode(pcm[offset : offset + FRAME_BYTES])
            packet = build_rtp(
                payload_type=codecs.PCMU,
                sequence=i,
                timestamp=i * 160,
                ssrc=ssrc,
                payload=payload,
                marker=i == 0,
            )
            peer.sock.sendto(packet, to)

    thread = threading.Thread(target=run, name="paced-rtp", daemon=True)
    thread.start()
    return thread
