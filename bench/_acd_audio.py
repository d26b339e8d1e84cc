"""bench/acd.py's ears on the bridge: Python RTP endpoints on a sample of the calls, both legs.

sipp 3.6 streams audio (``rtp_stream``) but checks nothing it receives, so the load's calls
carry sipp's audio both ways and a few calls of every step carry a ``Peer`` on each leg
instead: the caller's peer is in its sipp's SDP, the seat's peer in the seat's sipp's SDP.
Each peer sends band-limited noise of its own (``tests/telephony/bridge_audio``), paced as a
phone sends it, and keeps every packet it receives with its arrival time; what the other
leg's peer received is then compared with what this one sent (best-lag normalised
cross-correlation of the packets in sequence order, as a phone's jitter buffer plays them;
how many arrived out of order is counted), and the arrival times say whether the edge kept
the pace (the longest gap between two packets while the noise was coming).

Until its noise starts a peer sends μ-law silence every 20 ms (``_keep_alive``), as a phone
sends RTP all the time: a sampled call waits tens of seconds for the rest of its step to be
bridged, and a call silent that long is one that rtpengine (its ``--timeout``, 60 s) and the
edge (its media timeout) rightly end. The silence has an SSRC and sequence numbers of its
own, above the noise's, so a straggler in a listener's window sorts after the noise."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import numpy as np

from telephony import codecs
from telephony.endpoint import FRAME_BYTES
from telephony.rtp_packet import MalformedPacket, build_rtp, parse_rtp
from tests.telephony.bridge_audio import best_lag_correlation, noise, on_the_wire

HOST = "127.0.0.1"
NOISE_S = 6.0
_SILENCE = b"\xff" * 160  # 20 ms of μ-law silence
_KEEP_ALIVE_SEQ = 40_000  # the silence's first sequence number: after any noise packet's
_KEEP_ALIVE_MAX = 15_000  # packets: 5 minutes at most


class Peer:
    """One leg's phone media: a UDP socket that latches on to the edge's address from the
    first packet it gets (symmetric RTP, as the edge itself does) and records what arrives."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.sent_pcm = on_the_wire(noise(NOISE_S, seed))
        # (monotonic arrival, sequence number, μ-law payload)
        self.arrivals: list[tuple[float, int, bytes]] = []
        self.edge: tuple[str, int] | None = None
        self.send_started: float | None = None
        self.late_ms = 0.0  # the most this peer's own sending fell behind its schedule
        self.strays = 0  # datagrams dropped: not RTP, or not from the edge (or rtpengine)
        self._latched = threading.Event()
        self._stop = threading.Event()
        self._sender: threading.Thread | None = None
        self._thread = threading.Thread(target=self._receive, name="acd-peer", daemon=True)
        self._thread.start()
        self._idle = threading.Thread(target=self._keep_alive, name="acd-peer-idle", daemon=True)
        self._idle.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            try:
                packet = parse_rtp(data)
            except MalformedPacket:
                self.strays += 1
                continue
            if packet.payload_type != codecs.PCMU:
                continue
            if self.edge is None:
                self.edge = source
                self._latched.set()
            elif source != self.edge:
                # Not from where this phone's media is (a port the OS handed on while
                # something still sent to it): a phone would drop it too.
                self.strays += 1
                continue
            self.arrivals.append((time.monotonic(), packet.sequence, packet.payload))

    def _keep_alive(self) -> None:
        """Silence to wherever this phone's media goes now (``edge``: latched, or moved by a
        re-INVITE), every 20 ms until the noise starts (or ``close``)."""
        start = time.monotonic()
        for i in range(_KEEP_ALIVE_MAX):
            if self._stop.wait(max(0.0, start + 0.02 * i - time.monotonic())):
                return
            if self.send_started is not None:
                return
            to = self.edge
            if to is None:
                continue
            packet = build_rtp(
                payload_type=codecs.PCMU,
                sequence=_KEEP_ALIVE_SEQ + i % 20_000,
                timestamp=i * 160,
                ssrc=0x7000 + self.seed,
                payload=_SILENCE,
            )
            try:
                self.sock.sendto(packet, to)
            except OSError:
                return

    def speak(self, *, wait_s: float) -> bool:
        """Send the noise once the edge's address is known (within ``wait_s``); False when
        nothing came from the edge in time."""
        if not self._latched.wait(wait_s) or self.edge is None:
            return False
        self.send_started = time.monotonic()
        self._sender = threading.Thread(
            target=self._paced, args=(self.edge,), name="acd-peer-send", daemon=True
        )
        self._sender.start()
        return True

    def _paced(self, to: tuple[str, int]) -> None:
        """As a phone sends (``bridge_audio.paced_send``), keeping how late this sender
        itself was: a late sender, not the edge, may be what left the other leg dry."""
        assert self.send_started is not None
        for i, offset in enumerate(range(0, len(self.sent_pcm), FRAME_BYTES)):
            due = self.send_started + 0.02 * i
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.late_ms = max(self.late_ms, 1000 * (time.monotonic() - due))
            packet = build_rtp(
                payload_type=codecs.PCMU,
                sequence=i,
                timestamp=i * 160,
                ssrc=0x4000 + self.seed,
                payload=codecs.ulaw_encode(self.sent_pcm[offset : offset + FRAME_BYTES]),
                marker=i == 0,
            )
            self.sock.sendto(packet, to)

    def speak_when_heard(self, *, wait_s: float) -> threading.Thread:
        """The seat's side: its phone talks back once the caller's noise reaches it."""
        thread = threading.Thread(
            target=self.speak, kwargs={"wait_s": wait_s}, name="acd-peer-wait", daemon=True
        )
        thread.start()
        return thread

    def heard_since(self, start: float, seconds: float) -> Heard:
        """What came from ``start`` for ``seconds`` (+1 s of delivery), in sequence order.
        The numbers are the edge's (its leg's session starts them at random), so they may
        wrap within the noise: ordered by ``extended_sequences``. Sorted by the bare 16-bit
        numbers, a wrap put the noise's end before its start (an own-relay run of
        2026-12-05: correlation 0.03, 11 of 12 pieces clean, a 7 s "slip")."""
        window = [a for a in self.arrivals if start <= a[0] <= start + seconds + 1.0]
        extended = extended_sequences([seq for _, seq, _ in window])
        in_order = [a for _, a in sorted(zip(extended, window, strict=True), key=lambda x: x[0])]
        pcm = b"".join(codecs.ulaw_decode(p) for _, _, p in in_order)
        gaps = [b[0] - a[0] for a, b in zip(window, window[1:], strict=False)]
        reordered = sum(b < a for a, b in zip(extended, extended[1:], strict=False))
        return Heard(pcm, round(1000 * max(gaps), 1) if gaps else None, len(window), reordered)

    def close(self) -> None:
        self._stop.set()
        if self._sender is not None:
            self._sender.join(NOISE_S + 2)
        self._thread.join(1)
        self._idle.join(1)
        self.sock.close()


def extended_sequences(sequences: list[int]) -> list[int]:
    """RTP sequence numbers in arrival order, unwrapped (RFC 3550 A.1): each taken as the
    one nearest the previous, so 65535 is followed by 65536, not 0."""
    extended: list[int] = []
    for seq in sequences:
        if not extended:
            extended.append(seq)
            continue
        last = extended[-1]
        delta = (seq - last) & 0xFFFF
        extended.append(last + delta if delta < 0x8000 else last + delta - 0x10000)
    return extended


@dataclass(frozen=True)
class Heard:
    pcm: bytes
    max_gap_ms: float | None  # the longest gap between two arrivals (None: fewer than two)
    packets: int
    reordered: int  # packets that arrived after one with a higher sequence number


@dataclass(frozen=True)
class LegCheck:
    """One direction of one sampled call: what the listener heard of the speaker's noise."""

    correlation: float
    max_gap_ms: float | None
    packets: int
    # Where each 0.5 s of the noise lies in what was heard, relative to the first: a lag
    # that grows is silence put in (the other leg ran dry), one that shrinks audio lost.
    slip_ms: float = 0.0
    clean_pieces: float = 0.0  # share of the 0.5 s pieces heard with correlation >= 0.99
    reordered: int = 0  # packets that arrived out of order (the phone reorders them)


def check_leg(speaker: Peer, listener: Peer) -> LegCheck:
    if speaker.send_started is None:
        return LegCheck(0.0, None, 0)
    got = listener.heard_since(speaker.send_started, NOISE_S)
    # Shorter than what was sent (packets lost): padded with silence, which counts against it.
    heard = got.pcm.ljust(len(speaker.sent_pcm), b"\0")
    correlation = best_lag_correlation(speaker.sent_pcm, heard)
    lags, clean = pieces(speaker.sent_pcm, heard)
    slip = sum(abs(b - a) for a, b in zip(lags, lags[1:], strict=False)) / 8
    return LegCheck(
        round(correlation, 5), got.max_gap_ms, got.packets, round(slip, 1), clean, got.reordered
    )


def pieces(sent: bytes, heard: bytes, piece_s: float = 0.5) -> tuple[list[int], float]:
    """Each ``piece_s`` of ``sent`` found in ``heard``: its lag in samples, and the share of
    pieces that match (correlation >= 0.99)."""
    ref = np.frombuffer(sent, "<i2").astype(np.float64)
    rec = np.frombuffer(heard, "<i2").astype(np.float64)
    size = 1 << (len(rec) + 4000 - 1).bit_length()
    spectrum = np.fft.rfft(rec, size)
    step = int(8000 * piece_s)
    lags, good = [], 0
    for k in range(0, len(ref) - step + 1, step):
        piece = ref[k : k + step]
        cross = np.fft.irfft(spectrum * np.conj(np.fft.rfft(piece, size)), size)
        lag = int(np.argmax(cross[: len(rec) - step + 1]))
        window = rec[lag : lag + step]
        norm = np.linalg.norm(piece) * np.linalg.norm(window)
        good += bool(norm) and float(np.dot(piece, window) / norm) >= 0.99
        lags.append(lag - k)
    return lags, round(good / len(lags), 3) if lags else 0.0
