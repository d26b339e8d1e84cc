"""Real SIP peers for the SIP edge tests: sipp runs, a raw RTP peer, and an edge harness.

Every port is the test's own (picked above the OS's ephemeral range, or by the OS), so xdist
workers never collide.
"""

from __future__ import annotations

import queue
import random
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from telephony import codecs
from telephony.endpoint import FRAME_BYTES, Call
from telephony.rtp_packet import build_rtp, parse_rtp
from telephony.sip_config import SipConfig
from telephony.sip_edge import SipEdge

HOST = "127.0.0.1"
SCENARIOS = Path(__file__).parent / "scenarios"


def _reserved_ports() -> range | None:
    """Ports above the kernel's ephemeral range (32768-60999 on Debian) that no test's fixed RTP
    range uses (20000-59200): a port picked there is taken by no port-0 socket of a parallel
    worker and by no edge's RTP allocator between the pick and the peer's bind. None when the
    ephemeral range leaves too few above it."""
    try:
        high = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return range(high + 1, 65500) if 65500 - high > 2000 else None


_RESERVED = _reserved_ports()
_PICK = random.Random()  # seeded from the OS: each xdist worker picks its own ports


def _bindable(port: int, count: int = 1) -> bool:
    socks = []
    try:
        for each in range(port, port + count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.bind((HOST, each))
        return True
    except OSError:
        return False
    finally:
        for sock in socks:
            sock.close()


def free_udp_port() -> int:
    if _RESERVED is not None:
        for _ in range(200):
            port = _PICK.choice(_RESERVED)
            if _bindable(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def free_udp_run(count: int = 4) -> int:
    """The first of ``count`` consecutive free UDP ports: sipp's media port -mp also takes the
    next ones (RTCP, video), and dies if one of them is in use."""
    for _ in range(50):
        base = free_udp_port() & ~1
        if _bindable(base, count):
            return base
    raise RuntimeError("no run of free UDP ports")


def sipp_command(
    scenario: str,
    *,
    target: str | None = None,
    calls: int = 1,
    keys: dict[str, object] | None = None,
    timeout: float = 15,
    trace: Path | None = None,
    rate: int = 10,
    hold: int = 0,
    service: str = "12345",
    port: int | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """A sipp run of scenarios/``scenario`` on its own ports; a UAC when ``target`` is set.
    ``hold``: the length in ms of the scenario's bare ``<pause/>`` (the call's duration)."""
    cmd = [
        "sipp",
        "-sf",
        str(SCENARIOS / scenario),
        "-i",
        HOST,
        "-p",
        str(port or free_udp_port()),
        "-mp",
        str(free_udp_run()),
        "-cp",
        str(free_udp_port()),
        "-m",
        str(calls),
        "-r",
        str(rate),
        "-l",
        str(calls),
        "-timeout",
        f"{timeout}s",
        "-timeout_error",
        "-nostdin",
        "-s",
        service,
        "-d",
        str(hold),
    ]
    for name, value in (keys or {}).items():
        cmd += ["-key", name, str(value)]
    if trace is not None:
        cmd += [
            "-trace_msg",
            "-message_file",
            str(trace),
            "-trace_err",
            "-error_file",
            str(trace.with_suffix(".err")),
        ]
    cmd += extra or []
    if target:
        cmd.append(target)
    return cmd


def run_sipp(scenario: str, **kwargs) -> subprocess.CompletedProcess:
    timeout = kwargs.get("timeout", 15)
    return subprocess.run(
        sipp_command(scenario, **kwargs),
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        stdin=subprocess.DEVNULL,
    )


def start_sipp(scenario: str, **kwargs) -> subprocess.Popen:
    """sipp in the background; as a UAS (a ``port`` and no ``target``) once it listens, so
    that the first request is not lost and then retransmitted into a scripted scenario."""
    proc = subprocess.Popen(
        sipp_command(scenario, **kwargs),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if kwargs.get("port") and not kwargs.get("target"):
        deadline = time.monotonic() + 5
        while not _udp_port_taken(kwargs["port"]) and time.monotonic() < deadline:
            time.sleep(0.02)
    return proc


def _udp_port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
        return False


def output(result: subprocess.CompletedProcess) -> str:
    """The tail of sipp's screen and stderr, for assertion messages."""
    return (result.stdout or "")[-2500:] + (result.stderr or "")[-1000:]


def received(trace: Path, start_line: str, cseq: str) -> list[str]:
    """The messages sipp's ``-trace_msg`` log shows it received with this start line and
    CSeq (sipp itself absorbs retransmissions, so a scenario cannot count them)."""
    blocks = re.split(r"^-{10,}.*$", trace.read_text(), flags=re.M)
    return [
        block
        for block in blocks
        if "message received" in block
        and re.search(rf"^{re.escape(start_line)}", block, re.M)
        and re.search(rf"^CSeq: {re.escape(cseq)}\s*$", block, re.M)
    ]


def tone(freq: float = 400.0, seconds: float = 0.5, amplitude: int = 8000) -> bytes:
    t = np.arange(int(8000 * seconds)) / 8000
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def dominant_frequency(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / 8000)[int(np.argmax(spectrum))])


class RtpPeer:
    """The caller's media: a UDP socket whose port goes into sipp's SDP (``-key rtp_port``);
    it records what the edge sends and can send G.711 to the edge."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.packets: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except (TimeoutError, OSError):
                continue
            self.packets.append(parse_rtp(data))

    def send(
        self, to: tuple[str, int], pcm: bytes, *, payload_type: int, first_sequence: int = 0
    ) -> None:
        """Send ``pcm`` as 20 ms packets, all at once (the edge's jitter buffer orders them);
        ``first_sequence``: where this piece of a longer stream starts (sequence, timestamp)."""
        encode = codecs.encoder(payload_type)
        for i, offset in enumerate(range(0, len(pcm), FRAME_BYTES), start=first_sequence):
            payload = encode(pcm[offset : offset + FRAME_BYTES])
            self.sock.sendto(
                build_rtp(
                    payload_type=payload_type,
                    sequence=i,
                    timestamp=i * 160,
                    ssrc=0x5151,
                    payload=payload,
                    marker=i == 0,
                ),
                to,
            )

    def speak(
        self, to: tuple[str, int], frames: list[bytes], *, payload_type: int, stop: threading.Event
    ) -> threading.Thread:
        """Send ``frames`` as a phone does, in real time (a second of audio each second),
        from a thread of their own until done or ``stop`` is set."""

        def run() -> None:
            for start in range(0, len(frames), 50):
                if stop.is_set():
                    return
                self.send(
                    to,
                    b"".join(frames[start : start + 50]),
                    payload_type=payload_type,
                    first_sequence=start,
                )
                stop.wait(1.0)  # pacing real-time audio, not waiting for a result

        thread = threading.Thread(target=run, name="rtp-speaker", daemon=True)
        thread.start()
        return thread

    def speak_until(
        self,
        to: tuple[str, int],
        words: list[bytes],
        *,
        payload_type: int,
        stop: threading.Event,
        heard: threading.Event,
        then: list[bytes],
        at_most_s: float = 45.0,
    ) -> threading.Thread:
        """A caller who says ``words`` again and again, in real time, until ``heard`` is set
        (the test saw what it waits for) or ``at_most_s`` of talk, then says ``then`` (a
        silence that ends the report, say). On a loaded machine live decoding may take
        longer than a fixed script lasts; this caller goes on until it was heard."""

        def run() -> None:
            sent, limit = 0, int(at_most_s * 50)
            pending: list[bytes] = []
            finishing = False
            while not stop.is_set():
                if not pending:
                    if finishing:
                        return
                    if heard.is_set() or sent >= limit:
                        pending, finishing = list(then), True
                    else:
                        pending = list(words)
                second, pending = pending[:50], pending[50:]
                self.send(to, b"".join(second), payload_type=payload_type, first_sequence=sent)
                sent += len(second)
                stop.wait(len(second) / 50)  # pacing real-time audio, not waiting for a result

        thread = threading.Thread(target=run, name="rtp-caller", daemon=True)
        thread.start()
        return thread

    def send_key(self, to: tuple[str, int], key: str, *, payload_type: int = 101) -> None:
        """An RFC 4733 key press: three packets of one event, the last with the end bit."""
        event = "0123456789*#".index(key)
        for i, end in enumerate((False, False, True)):
            payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, 160 * (i + 1))
            self.sock.sendto(
                build_rtp(
                    payload_type=payload_type,
                    sequence=500 + i,
                    timestamp=80000,
                    ssrc=0x5151,
                    payload=payload,
                    marker=i == 0,
                ),
                to,
            )

    def received_audio(self, payload_type: int) -> bytes:
        decode = codecs.decoder(payload_type)
        return b"".join(decode(p.payload) for p in self.packets if p.payload_type == payload_type)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


def serve_until_hangup(call: Call, frames: list[bytes]) -> None:
    """A handler that listens until the caller hangs up."""
    while (frame := call.read_frame(1.0)) is not None:
        if frame:
            frames.append(frame)


@dataclass
class Harness:
    """A started edge and what it told us."""

    edge: SipEdge
    handler: Callable[[Call], None]
    calls: list[Call] = field(default_factory=list)
    ended: list[Call] = field(default_factory=list)
    frames: dict[str, list[bytes]] = field(default_factory=dict)
    answered: queue.Queue = field(default_factory=queue.Queue)

    def on_call(self, call: Call) -> None:
        self.calls.append(call)
        self.frames[call.call_id] = []
        self.answered.put(call)
        self.handler(call)

    @property
    def target(self) -> str:
        return f"{self.edge.address[0]}:{self.edge.address[1]}"


def start_edge(handler: Callable[[Call], None] | None = None, **config) -> Harness:
    config.setdefault("port", 0)
    config.setdefault("rtp_low", 20000)
    config.setdefault("rtp_high", 30000)
    edge = SipEdge(SipConfig(host=HOST, **config))
    harness = Harness(edge=edge, handler=handler or (lambda call: None))
    if handler is None:
        harness.handler = lambda call: serve_until_hangup(call, harness.frames[call.call_id])
    edge.start(on_call=harness.on_call, on_ended=harness.ended.append)
    return harness
