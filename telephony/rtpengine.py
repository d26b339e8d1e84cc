"""A client for rtpengine's "ng" control protocol: the media relay under Kamailio, out of Python.

rtpengine (Debian's ``rtpengine-daemon``) relays RTP between the two legs of a call in C — in
the kernel with its module, in userspace without — and is told what to relay over the ng
protocol: a UDP datagram ``<cookie> <bencoded dict>``, answered by ``<cookie> <bencoded
dict>`` with ``result`` ``ok``/``pong`` (or ``error`` with ``error-reason``). A request whose
answer is lost is sent again with the same cookie: rtpengine remembers the cookies it
answered and replays the answer, so a retried ``offer`` does not allocate twice.

A call, as a B2BUA drives it, is one ``offer`` (the SDP one leg sent: rtpengine returns it
rewritten to point at its own port, for the other leg), one ``answer`` (the other leg's SDP,
returned rewritten for the first) and a ``delete``. ``subscribe_request`` /
``subscribe_answer`` tap a leg's media: rtpengine sends a copy of what one party says to a
third address, ``unsubscribe`` stops it. ``query`` reads a call's per-stream counters.

``relay_bridge`` sets up an operator bridge that way (caller ↔ agent through rtpengine) and
``MediaTap`` is the edge's side of it: the copies of both parties arrive on receive-only
sessions (``telephony.rtp_receiver``) and the process's one ``TapPump`` reads every call's
five times a second into the stereo WAV and the live transcript's ``on_audio``. ``Daemon``
runs an rtpengine of our own on loopback (tests, ``bench/relay.py``). The edge uses it for
bridged calls when ``media_relay`` is ``rtpengine`` (``telephony.media_relay``).

Nothing here imports the SIP stack: SDP bodies pass as strings; the bencoding is
``telephony.bencode``.
"""

from __future__ import annotations

import logging
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from telephony.bencode import Bencodable, BencodeError, bdecode, bencode
from telephony.endpoint import FRAME_BYTES
from telephony.recording import Side, StereoRecorder
from telephony.rtp_ports import RtpPortAllocator
from telephony.rtp_receiver import RtpReceiver

log = logging.getLogger(__name__)

_MAX_DATAGRAM = 65_535
# Frames one pump of one side takes at most: 10 s (a pump held up that long).
_PUMP_MAX_FRAMES = 500


class RtpengineError(Exception):
    """rtpengine answered ``error`` (its ``error-reason``), or did not answer at all."""


# --------------------------------------------------------------------------- the client


@dataclass(frozen=True)
class Subscription:
    """A tap on one party's media: rtpengine's offer to the subscriber, and its tag."""

    sdp: str
    to_tag: str  # the subscriber's tag: ``subscribe_answer`` and ``unsubscribe`` name it
    from_tag: str  # whose media it carries


class NgClient:
    """Talks ng to one rtpengine over UDP. Thread-safe: each request has its own socket, so
    answers never cross between callers."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        timeout: float = 1.0,
        attempts: int = 3,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.attempts = attempts

    def command(self, name: str, **params: Bencodable) -> dict[str, Any]:
        """Send ``{"command": name, **params}`` (``call_id`` → ``call-id``: keyword names
        with underscores become ng's dashes) and return the answer dict. Raises
        ``RtpengineError`` on ``error`` or after ``attempts`` unanswered sends."""
        message: dict[str, Bencodable] = {"command": name}
        message.update({key.replace("_", "-"): value for key, value in params.items()})
        cookie = secrets.token_hex(8)
        request = cookie.encode() + b" " + bencode(message)
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(self.timeout)
            for _ in range(self.attempts):
                sock.sendto(request, self.address)
                answer = self._receive(sock, cookie)
                if answer is not None:
                    break
            else:
                raise RtpengineError(
                    f"rtpengine at {self.address[0]}:{self.address[1]} did not answer {name!r}"
                )
        result = answer.get("result")
        if result == "error":
            raise RtpengineError(f"{name}: {answer.get('error-reason', 'error')}")
        if "warning" in answer:
            log.warning("rtpengine %s: %s", name, answer["warning"])
        return answer

    def _receive(self, sock: socket.socket, cookie: str) -> dict[str, Any] | None:
        """The answer to ``cookie``, or None on timeout; stale answers (to an earlier send
        of this socket) and garbage are skipped."""
        while True:
            try:
                data = sock.recv(_MAX_DATAGRAM)
            except TimeoutError:
                return None
            got, _, body = data.partition(b" ")
            if got.decode(errors="replace") != cookie:
                continue
            try:
                answer = bdecode(body)
            except BencodeError:
                log.warning("rtpengine: malformed answer %r", body[:80])
                continue
            if isinstance(answer, dict):
                return answer

    # ----------------------------------------------------------------- commands
    def ping(self) -> bool:
        return self.command("ping").get("result") == "pong"

    def offer(
        self,
        *,
        call_id: str,
        from_tag: str,
        sdp: str,
        flags: Sequence[str] = (),
        record: bool = False,
        **params: Bencodable,
    ) -> str:
        """The offering leg's SDP → the SDP to send the other leg (rtpengine's address)."""
        if record:
            params["record call"] = "yes"
        answer = self.command(
            "offer",
            call_id=call_id,
            from_tag=from_tag,
            sdp=sdp,
            flags=list(flags),
            replace=["origin", "session-connection"],
            ICE="remove",
            **params,
        )
        return str(answer["sdp"])

    def answer(
        self,
        *,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: str,
        flags: Sequence[str] = (),
        **params: Bencodable,
    ) -> str:
        """The answering leg's SDP → the SDP to send the offerer."""
        answer = self.command(
            "answer",
            call_id=call_id,
            from_tag=from_tag,
            to_tag=to_tag,
            sdp=sdp,
            flags=list(flags),
            replace=["origin", "session-connection"],
            ICE="remove",
            **params,
        )
        return str(answer["sdp"])

    def delete(self, *, call_id: str, from_tag: str | None = None) -> dict[str, Any]:
        """End the call's relay (all its legs when ``from_tag`` is None); the answer carries
        its final counters."""
        params: dict[str, Bencodable] = {"call_id": call_id, "delete_delay": 0}
        if from_tag is not None:
            params["from_tag"] = from_tag
        return self.command("delete", **params)

    def query(self, *, call_id: str) -> dict[str, Any]:
        """The call's state: ``totals`` and per tag (``tags``) per stream packet counters."""
        return self.command("query", call_id=call_id)

    def list_calls(self, limit: int = 32) -> list[str]:
        return [str(c) for c in self.command("list", limit=limit).get("calls", [])]

    def subscribe_request(
        self, *, call_id: str, from_tag: str, flags: Sequence[str] = ()
    ) -> Subscription:
        """Tap what ``from_tag``'s party sends: rtpengine offers a send-only stream."""
        answer = self.command(
            "subscribe request", call_id=call_id, from_tag=from_tag, flags=list(flags)
        )
        return Subscription(sdp=str(answer["sdp"]), to_tag=str(answer["to-tag"]), from_tag=from_tag)

    def subscribe_answer(self, *, call_id: str, to_tag: str, sdp: str) -> None:
        """The subscriber's SDP (where the copy goes), for the ``to_tag`` of its request."""
        self.command("subscribe answer", call_id=call_id, to_tag=to_tag, sdp=sdp)

    def unsubscribe(self, *, call_id: str, to_tag: str) -> None:
        self.command("unsubscribe", call_id=call_id, to_tag=to_tag)


def audio_sdp(
    host: str,
    port: int,
    *,
    session_id: int = 1,
    direction: str = "sendrecv",
    payload_types: Sequence[int] = (0, 8),
    dtmf: bool = True,
) -> str:
    """A minimal G.711 (μ-law 0, A-law 8) offer or answer for ``host:port``, with
    telephone-event 101 unless ``dtmf`` is False."""
    names = {0: "PCMU/8000", 8: "PCMA/8000"}
    formats = [*payload_types, *([101] if dtmf else [])]
    lines = [
        "v=0",
        f"o=- {session_id} 1 IN IP4 {host}",
        "s=-",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(map(str, formats))}",
        *(f"a=rtpmap:{pt} {names[pt]}" for pt in payload_types),
        *(["a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16"] if dtmf else []),
        "a=ptime:20",
        f"a={direction}",
    ]
    return "\r\n".join(lines) + "\r\n"


def media_address(sdp: str) -> tuple[str, int]:
    """The first audio stream's address in ``sdp`` (its own c= over the session's)."""
    host: str | None = None
    port: int | None = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            if port is not None:
                break  # past the first audio stream
            if line.startswith("m=audio "):
                port = int(line.split()[1])
        elif line.startswith("c=IN IP"):
            host = line.split()[-1]
    if host is None or port is None:
        raise ValueError("no audio stream in the SDP")
    return host, port


class Daemon:
    """An ``rtpengine`` of our own, in the foreground on loopback ports: the tests', the
    benchmark's and a single machine's relay (production runs Debian's service instead).
    Userspace forwarding (``--table=-1``): no kernel module needed."""

    def __init__(
        self,
        *,
        ng_port: int,
        port_min: int,
        port_max: int,
        interface: str = "127.0.0.1",
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        binary: str = "rtpengine",
    ) -> None:
        self.ng_address = (interface, ng_port)
        self.args = [
            binary,
            # Not the package's /etc/rtpengine/rtpengine.conf: its fixed CLI and HTTP ports
            # (2224, 2225) would stop a second daemon on the machine.
            "--config-file=none",
            f"--interface={interface}",
            f"--listen-ng={interface}:{ng_port}",
            "--foreground",
            "--log-stderr",
            "--log-level=5",
            f"--port-min={port_min}",
            f"--port-max={port_max}",
            "--table=-1",
            *extra_args,
        ]
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> NgClient:
        """Start it and wait until it answers a ping; raises RtpengineError if it does not
        (with its exit status; its log says why)."""
        log_file = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(self.args, stdout=log_file, stderr=log_file)
        finally:
            if not isinstance(log_file, int):
                log_file.close()
        client = NgClient(self.ng_address, timeout=0.2, attempts=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if client.ping():
                    return NgClient(self.ng_address)
            except RtpengineError:
                pass
        status = self.process.poll()
        self.stop()
        raise RtpengineError(
            f"rtpengine did not start (exit status {status}, log {self.log_path}): "
            + " ".join(self.args)
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> NgClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- a relayed bridge


@dataclass(frozen=True)
class RelayedBridge:
    """A caller and an agent relayed by rtpengine: the SDP each phone must be given (by
    re-INVITE, or in the agent's INVITE) so that it sends to rtpengine instead of the edge."""

    call_id: str
    to_caller: str  # for the caller's phone: rtpengine's port on the caller's side
    to_agent: str
    taps: tuple[Subscription, ...] = ()


CALLER_TAG = "caller"
AGENT_TAG = "agent"


def relay_bridge(
    ng: NgClient,
    *,
    call_id: str,
    caller_sdp: str,
    agent_sdp: str,
    tap: MediaTap | None = None,
) -> RelayedBridge:
    """Have rtpengine relay ``call_id`` between the caller's media (``caller_sdp``) and the
    agent's; with ``tap``, rtpengine also sends the edge a copy of each side (recording and
    live ASR)."""
    to_agent = ng.offer(call_id=call_id, from_tag=CALLER_TAG, sdp=caller_sdp)
    to_caller = ng.answer(call_id=call_id, from_tag=CALLER_TAG, to_tag=AGENT_TAG, sdp=agent_sdp)
    taps = () if tap is None else tap.subscribe(ng, call_id=call_id)
    return RelayedBridge(call_id, to_caller=to_caller, to_agent=to_agent, taps=taps)


Sink = Callable[[Side, bytes], None]
"""Where a tap's audio goes: ``sink(side, pcm)``, each side's frames in order."""


class Pumped(Protocol):
    def pump(self, now: float) -> None: ...


class TapPump:
    """One thread per process reading every tap (``MediaTap``, or the edge's relayed calls
    around theirs) every ``interval_s``: what each party said since is handed on in one
    piece. Two reader threads per call, each woken ten times a second, were most of the
    SIP process's CPU at a hundred relayed calls (the wake-ups, not the audio); one sweep
    over every call five times a second reads the same audio.

    ``remove`` waits for a sweep under way: once it returns, the item is not pumped again.
    """

    _shared: TapPump | None = None
    _shared_lock = threading.Lock()

    def __init__(self, *, interval_s: float = 0.2, name: str = "tap-pump") -> None:
        self.interval_s = interval_s
        self.name = name
        self._items: dict[int, Pumped] = {}
        self._lock = threading.RLock()  # held through a sweep
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sweeps = 0
        self.late_sweeps = 0  # sweeps that began a whole interval late (a busy process)

    @classmethod
    def shared(cls) -> TapPump:
        with cls._shared_lock:
            if cls._shared is None or cls._shared._stop.is_set():
                cls._shared = cls()
            return cls._shared

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Pumped) -> None:
        with self._lock:
            if self._stop.is_set():
                raise RuntimeError(f"tap pump {self.name} is stopped")
            self._items[id(item)] = item
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def remove(self, item: Pumped) -> None:
        with self._lock:
            self._items.pop(id(item), None)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2 + self.interval_s)

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            due += self.interval_s
            with self._lock:
                now = time.monotonic()
                for item in list(self._items.values()):
                    try:
                        item.pump(now)
                    except Exception:
                        log.exception("tap pump: reading %r failed", item)
            self.sweeps += 1
            delay = due - time.monotonic()
            if delay < -self.interval_s:
                self.late_sweeps += 1
                due = time.monotonic()  # resume the pace rather than sweep back to back
            elif delay > 0:
                self._stop.wait(delay)


class MediaTap:
    """The edge's side of a relayed bridge: rtpengine sends a copy of what each party says
    to one ``RtpReceiver`` per side here (receive-only, locked to the port rtpengine sends
    the copy from; nothing is sent from here), and the process's ``TapPump`` reads both
    every 200 ms as the bridge's relay read a leg — every frame that came, a stretch with
    nothing as silence — into a ``sink``: by default the stereo WAV (caller left) and
    ``on_audio`` (the live transcript); the edge's bridge gives its own
    (``telephony.media_relay``)."""

    def __init__(
        self,
        *,
        host: str,
        payload_type: int = 0,
        recording: Path | None = None,
        on_audio: Sink | None = None,
        read_timeout_s: float = 0.2,
        ports: RtpPortAllocator | None = None,
    ) -> None:
        self.host = host
        self.payload_type = payload_type
        # With ``ports`` (the edge's allocator) the taps listen in the edge's RTP range, so a
        # firewall opened for it is enough, and ``stop`` gives them back; else any free port.
        self._ports = ports
        self.sessions: dict[Side, RtpReceiver] = {}
        try:
            for side in (Side.CALLER, Side.AGENT):
                port, sock = (0, None) if ports is None else ports.allocate()
                try:
                    self.sessions[side] = RtpReceiver(
                        local_host=host,
                        port=port,
                        sock=sock,
                        remote=None,
                        payload_type=payload_type,
                    )
                except Exception:
                    if ports is not None:
                        ports.release(port)
                    raise
        except Exception:
            self._release()
            raise
        self.on_audio = on_audio
        # A side that sent nothing this long is taken as this long silent (a reader's timeout).
        self.read_timeout_s = read_timeout_s
        self._silence = bytes(round(read_timeout_s * 50) * FRAME_BYTES)
        self._recorder = StereoRecorder(recording) if recording is not None else None
        self.recording = recording
        self._sink: Sink = self._record
        self._quiet_since = dict.fromkeys(self.sessions, 0.0)
        # Each side's packets at the pump's last look: the party's sign of life
        # (``telephony.media_timeout``; in rtpengine mode the taps are all the edge receives).
        self._packets = dict.fromkeys(self.sessions, 0)
        self._pump: TapPump | None = None
        self._lock = threading.Lock()  # one reader at a time: the pump, or stop's last read
        self._stopped = False

    def subscribe(self, ng: NgClient, *, call_id: str) -> tuple[Subscription, ...]:
        """Ask rtpengine for both sides' copies, to our two sessions."""
        made = []
        for side, tag in ((Side.CALLER, CALLER_TAG), (Side.AGENT, AGENT_TAG)):
            sub = ng.subscribe_request(call_id=call_id, from_tag=tag)
            session = self.sessions[side]
            session.set_remote(media_address(sub.sdp))  # the only source accepted
            # Every format it offered (rtpengine 10.5 refuses an answer that narrows them);
            # what comes is the party's own codec, ``payload_type``.
            answer = audio_sdp(self.host, session.local_address[1], direction="recvonly")
            ng.subscribe_answer(call_id=call_id, to_tag=sub.to_tag, sdp=answer)
            made.append(sub)
        return tuple(made)

    def open(self, sink: Sink | None = None) -> None:
        """Ready to be pumped (``pump``) into ``sink`` (default: the recording and
        ``on_audio``) by whoever pumps it: ``start`` has the shared pump do it."""
        if sink is not None:
            self._sink = sink
        now = time.monotonic()
        for side, session in self.sessions.items():
            session.start()
            self._quiet_since[side] = now

    def start(self, pump: TapPump | None = None) -> None:
        self.open()
        self._pump = pump if pump is not None else TapPump.shared()
        self._pump.add(self)

    def pump(self, now: float) -> None:
        """Hand on what each side said since the last pump (the pump's thread)."""
        with self._lock:
            if self._stopped:
                return
            for side, session in self.sessions.items():
                pcm = session.read_frames(0, _PUMP_MAX_FRAMES)
                self._packets[side] = session.packets_in
                if pcm:
                    self._quiet_since[side] = now
                    self._sink(side, pcm)
                    continue
                # Nothing came: the time still passed, for the file and the ASR.
                while now - self._quiet_since[side] >= self.read_timeout_s:
                    self._quiet_since[side] += self.read_timeout_s
                    self._sink(side, self._silence)

    def packets_in(self, side: Side) -> int:
        """What ``side``'s party had sent when the pump last read its tap."""
        return self._packets[side]

    def _record(self, side: Side, pcm: bytes) -> None:
        if self._recorder is not None:
            self._recorder.write(side, pcm)
        if self.on_audio is not None:
            try:
                self.on_audio(side, pcm)
            except Exception:
                log.exception("tap on_audio failed")

    def stop(self) -> None:
        """Stop pumping; what the sockets still held goes to the sink, then the recording
        is closed."""
        if self._pump is not None:
            self._pump.remove(self)
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            for side, session in self.sessions.items():
                session.stop()
                while pcm := session.read_frames(0, _PUMP_MAX_FRAMES):
                    self._sink(side, pcm)
            self._release()
        if self._recorder is not None:
            self._recorder.close()

    def _release(self) -> None:
        """Close the sessions' sockets and give their ports back to the edge's allocator."""
        for session in self.sessions.values():
            session.stop()  # again after ``stop``'s last read: it closes once
            if self._ports is not None:
                self._ports.release(session.local_address[1])
