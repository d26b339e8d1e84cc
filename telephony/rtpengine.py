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
``MediaTap`` is the edge's side of it: the copies of both parties, read as the bridge's own
relay reads them, into the stereo WAV and the live transcript's ``on_audio``. ``Daemon``
runs an rtpengine of our own on loopback (tests, ``bench/relay.py``). The edge uses it for
bridged calls when ``media_relay`` is ``rtpengine`` (``telephony.media_relay``).

Nothing here imports the SIP stack: SDP bodies pass as strings.
"""

from __future__ import annotations

import logging
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telephony.endpoint import FRAME_BYTES
from telephony.media_loop import MediaLoop
from telephony.recording import Side, StereoRecorder
from telephony.rtp_session import RtpSession

log = logging.getLogger(__name__)

Bencodable = bytes | str | int | Sequence[Any] | Mapping[str, Any]

_MAX_DATAGRAM = 65_535


class RtpengineError(Exception):
    """rtpengine answered ``error`` (its ``error-reason``), or did not answer at all."""


class BencodeError(ValueError):
    """A datagram that is not well-formed bencode."""


# --------------------------------------------------------------------------- bencode


def bencode(value: Bencodable) -> bytes:
    """Bencode ``value``: str as UTF-8 bytes, bool as 0/1, dict keys sorted (as BEP 3 asks)."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


def _encode(value: Any, out: bytearray) -> None:
    if isinstance(value, bool | int):
        out += b"i%de" % int(value)
    elif isinstance(value, str | bytes):
        raw = value.encode() if isinstance(value, str) else value
        out += b"%d:" % len(raw) + raw
    elif isinstance(value, Mapping):
        out += b"d"
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        for key, item in items:
            out += b"%d:" % len(key) + key
            _encode(item, out)
        out += b"e"
    elif isinstance(value, Sequence):
        out += b"l"
        for item in value:
            _encode(item, out)
        out += b"e"
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one bencoded value; byte strings come back as str (UTF-8, undecodable bytes
    kept as surrogates), so an SDP reads as text."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes after the value")
    return value


def _decode(data: bytes, at: int) -> tuple[Any, int]:
    if at >= len(data):
        raise BencodeError("truncated")
    lead = data[at : at + 1]
    if lead == b"i":
        end = data.find(b"e", at)
        if end < 0:
            raise BencodeError("unterminated integer")
        try:
            return int(data[at + 1 : end]), end + 1
        except ValueError as exc:
            raise BencodeError("bad integer") from exc
    if lead in (b"l", b"d"):
        items: list[Any] = []
        at += 1
        while data[at : at + 1] != b"e":
            if at >= len(data):
                raise BencodeError("unterminated list or dict")
            item, at = _decode(data, at)
            items.append(item)
        if lead == b"l":
            return items, at + 1
        if len(items) % 2:
            raise BencodeError("dict with a key and no value")
        return dict(zip(items[::2], items[1::2], strict=True)), at + 1
    colon = data.find(b":", at)
    if colon < 0 or not data[at:colon].isdigit():
        raise BencodeError(f"unexpected byte {lead!r}")
    end = colon + 1 + int(data[at:colon])
    if end > len(data):
        raise BencodeError("truncated string")
    return data[colon + 1 : end].decode("utf-8", "surrogateescape"), end


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


class MediaTap:
    """The edge's side of a relayed bridge: rtpengine sends a copy of what each party says
    to one ``RtpSession`` per side here, and one thread per side reads it as the bridge's
    relay did — every frame that came, gaps as silence — into the stereo WAV (caller left)
    and ``on_audio`` (the live transcript). Nothing is sent to the phones from here.

    The sessions still pace comfort silence to their remote (rtpengine's tap port, which
    drops it): ``RtpSession`` has no receive-only mode yet."""

    def __init__(
        self,
        *,
        host: str,
        payload_type: int = 0,
        recording: Path | None = None,
        on_audio: Callable[[Side, bytes], None] | None = None,
        read_timeout_s: float = 0.2,
        loop: MediaLoop | None = None,
    ) -> None:
        self.host = host
        self.payload_type = payload_type
        self.sessions = {
            side: RtpSession(
                local_host=host,
                port=0,
                sock=None,
                remote=None,
                payload_type=payload_type,
                dtmf_payload_type=None,
                loop=loop,
            )
            for side in (Side.CALLER, Side.AGENT)
        }
        self.on_audio = on_audio
        self.read_timeout_s = read_timeout_s
        self._recorder = StereoRecorder(recording) if recording is not None else None
        self.recording = recording
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

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

    def start_sessions(self) -> None:
        """Only the sessions: whoever reads them (``telephony.bridge``) starts no threads here."""
        for session in self.sessions.values():
            session.start()

    def start(self) -> None:
        self.start_sessions()
        for side in self.sessions:
            thread = threading.Thread(
                target=self._read, args=(side,), name=f"tap-{side.value}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _read(self, side: Side) -> None:
        session = self.sessions[side]
        silence = bytes(round(self.read_timeout_s * 50) * FRAME_BYTES)
        while not self._stopped.is_set():
            pcm = session.read_frames(self.read_timeout_s, 50)
            if pcm is None:
                return
            pcm = pcm or silence  # nothing came: the time still passed, for the file and ASR
            if self._recorder is not None:
                self._recorder.write(side, pcm)
            if self.on_audio is not None:
                try:
                    self.on_audio(side, pcm)
                except Exception:
                    log.exception("tap on_audio failed")

    def stop(self) -> None:
        self._stopped.set()
        for session in self.sessions.values():
            session.stop()
        for thread in self._threads:
            thread.join(self.read_timeout_s + 2.0)
        if self._recorder is not None:
            self._recorder.close()
