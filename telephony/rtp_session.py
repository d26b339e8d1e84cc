"""RTP media for one call: G.711 in both directions, RFC 4733 keys in, paced sending out.

This replaces pyVoIP 1.6.8's ``RTPClient`` rather than subclassing it, because every part of
it is defective and would be overridden anyway: it sends μ-law on a PCMA call, crashes its
sender when no G.711 codec was negotiated, dies on one malformed packet (its ``RTPMessage``
reads CSRCs past the end of a packet, ignores padding and extensions, and indexes a 16-entry
table with any event code), accepts RTP from anyone, decodes to 8-bit PCM, spins forever
reading a quiet caller, and binds ports without checking them. Nothing of it is imported
here: even its sound ``PayloadType`` enum would pull in ``audioop`` (see ``codecs``).

Over 600 lines because one session's receive path (parsing, source latching, the jitter
buffer, RFC 4733 keys) and send path (pacing, comfort noise, keys out) share its state and
its lock; split, each half would reach into the other's fields.

An ``RtpSession`` has no thread of its own: the process's ``MediaLoop``
(``telephony.media_loop``) receives and sends for every session on a 20 ms tick, and the
call's reader decodes in its own thread. Packets are ``telephony.rtp_packet``; ports come from
``telephony.rtp_ports``.
"""

from __future__ import annotations

import heapq
import ipaddress
import logging
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

from telephony import codecs, rtp_ports
from telephony.endpoint import FRAME_BYTES, FRAME_SAMPLES
from telephony.media_loop import MAX_SEND_BEHIND_S, TICK_S, MediaLoop
from telephony.rtp_packet import HEADER, MalformedPacket, RtpPacket, parse_rtp

log = logging.getLogger(__name__)

DTMF_KEYS = "0123456789*#ABCD"
_MAX_DATAGRAM = 2048
_SEQ_TS_SSRC = struct.Struct("!HII")  # bytes 2-11 of the RTP header
_PLAIN_V2 = 0x80  # the first byte of a version 2 packet without padding, extension, CSRCs
# A gap longer than this in the sender's timestamps is a new timeline (a re-INVITE to another
# media server, a restarted phone), not silence to be reproduced sample by sample.
_MAX_FILL_SAMPLES = 60 * 8000
# "c=0.0.0.0" (RFC 2543 hold) and port 0: nowhere to send.
_HOLD_HOSTS = frozenset({"0.0.0.0", "::"})
# Bound on buffered packets when nobody reads (10 minutes of 20 ms packets).
_MAX_BUFFERED = 30_000
# What a reader drains itself when the loop kept it waiting: 10 s of a 20 ms stream.
_READER_DRAIN_LIMIT = 500


# How long a telephone-event is remembered to recognise its retransmitted packets.
_EVENT_MEMORY_S = 5.0
# Keys we send (a bridge passing a caller's key on): RFC 4733 events of this length and
# volume (dBm0 below zero), the end packet sent three times as §2.5.1.4 asks.
DTMF_SEND_MS = 100
_DTMF_VOLUME = 10
_DTMF_END_COPIES = 3
# Keys queued and not yet sent, at most: a peer holding a key down must not grow memory.
_MAX_DTMF_QUEUED = 32


@dataclass
class _Event:
    ended: bool  # an end packet was seen
    at: float  # monotonic time of its last packet


def _unwrap(value: int, reference: int | None, bits: int) -> int:
    """Extend a wrapping counter to the unwrapped value nearest ``reference``."""
    if reference is None:
        return value
    half = 1 << (bits - 1)
    diff = ((value - reference + half) % (1 << bits)) - half
    return reference + diff


def _normalise(addr: tuple[str, int]) -> tuple[str, int]:
    """The form ``recvfrom`` reports, so a source compares equal to the SDP's address
    (``::0001`` and ``::1``); SDP carries IP addresses, not names."""
    host, port = addr[0], int(addr[1])
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        pass
    return host, port


class RtpSession:
    """One call's RTP. See the module docstring; the contract the SIP layer codes against:

    - ``read_frame(timeout)``: 20 ms of the caller as PCM16 LE (320 bytes). Missing packets and
      the sender's silence-suppression gaps come back as silence, placed by RTP timestamp, so
      the stream read matches the time the caller spoke. ``b""`` when nothing arrived within
      ``timeout`` (the socket itself is looked at before saying so); ``None`` after
      ``stop()`` once everything received has been read.
    - ``read_frames(timeout, max_frames)``: as ``read_frame``, with every whole frame ready
      (up to ``max_frames``) in one piece.
    - ``send_audio(pcm16)`` queues; the media loop paces it at 20 ms a packet.

    Source lock: by default only packets from ``remote`` (the address in the peer's SDP) are
    accepted. With ``latch=True`` the first source seen is accepted instead and also becomes
    where we send (symmetric RTP, "comedia", RFC 4961): a phone behind NAT sends from a public
    address its SDP can't know. ``latch_from`` narrows who may be latched to (the SIP edge
    passes the SDP's host and the host the INVITE came from, as SBCs do), so that a stranger
    spraying packets at the port cannot take the call's audio. Packets dropped for their
    source are counted (``foreign_source``) and logged, once per session and source.
    """

    def __init__(
        self,
        *,
        local_host: str,
        port: int,
        sock: socket.socket | None,
        remote: tuple[str, int] | None,
        payload_type: int,
        dtmf_payload_type: int | None,
        on_dtmf: Callable[[str], None] | None = None,
        latch: bool = False,
        latch_from: Collection[str] | None = None,
        jitter_ms: int = 60,
        receive_buffer_bytes: int = rtp_ports.RECEIVE_BUFFER_BYTES,
        loop: MediaLoop | None = None,
    ) -> None:
        self._decode = codecs.decoder(payload_type)  # raises UnsupportedCodec for anything else
        self._encode = codecs.encoder(payload_type)
        self.payload_type = payload_type
        self.codec = codecs.CODEC_NAMES[payload_type]
        self.dtmf_payload_type = dtmf_payload_type
        self._on_dtmf = on_dtmf
        self._latch = latch
        self._latched = False
        self._latch_from = (
            None if latch_from is None else {_normalise((h, 0))[0] for h in latch_from}
        )
        self._foreign_logged: set[tuple[str, int]] = set()
        self._remote = _normalise(remote) if remote is not None else None
        self._jitter_samples = jitter_ms * 8
        self._jitter_s = jitter_ms / 1000
        if sock is None:
            sock = socket.socket(
                socket.AF_INET6 if ":" in local_host else socket.AF_INET, socket.SOCK_DGRAM
            )
            sock.bind((local_host, port))
        self._sock = sock
        ready = rtp_ports.prepared_address(sock)
        if ready is not None and receive_buffer_bytes == rtp_ports.RECEIVE_BUFFER_BYTES:
            # Made ready by the edge's RtpPortAllocator off the SIP receive thread.
            self.local_address: tuple[str, int] = ready
        else:
            # Headroom for bursts while recognition holds the CPU (capped at rmem_max).
            rtp_ports.prepare(sock, receive_buffer_bytes)
            self.local_address = sock.getsockname()[:2]
        self._loop = loop

        self._stats = {
            "received": 0,
            "malformed": 0,
            "foreign_source": 0,
            "lost": 0,
            "late": 0,
            "sent": 0,
            "other_payload": 0,
            "ignored_events": 0,
        }
        self._closed = False
        self._started = False
        self._stopped = False  # read by the loop without a lock: a plain flag
        # Out of the loop's send pass (``MediaLoop._park``): nowhere to send, nothing queued.
        # Set and cleared by the loop's thread; whoever gives the session work while it is set
        # asks the loop to ``unpark`` it (``_work_given``).
        self._parked = False
        # Whoever drains the socket holds this: the loop, or a reader the loop kept waiting.
        self._recv_lock = threading.Lock()

        # Receive side, guarded by _cond. The jitter buffer is keyed by unwrapped timestamp.
        self._cond = threading.Condition()
        self._buffer: dict[int, tuple[bytes, float, bool]] = {}
        self._heap: list[int] = []
        self._play_ts: int | None = None
        self._pending = bytearray()  # PCM ready for the reader
        # Payloads moved out of the jitter buffer after ``_pending``, decoded when read (one
        # table lookup a read, not one a packet); ``_ready`` counts both in PCM bytes.
        self._undecoded: list[bytes] = []
        self._ready = 0
        self._ssrc: int | None = None
        self._max_ts: int | None = None
        self._base_seq = 0
        self._max_seq: int | None = None
        self._stream_received = 0
        self._lost_before = 0  # loss in earlier SSRCs of this session
        self._recent_events: dict[tuple[int, int], _Event] = {}

        # Send side, guarded by _out_cond; ``_out`` holds audio already encoded.
        self._out_cond = threading.Condition()
        self._closed_out = False
        self._out = bytearray()
        self._in_flight = False
        self._seq = random.randrange(1 << 16)
        self._ts = random.randrange(1 << 32)
        self._out_ssrc = random.randrange(1, 1 << 32)
        self._silence = bytes([codecs.silence_byte(payload_type)]) * FRAME_SAMPLES
        self._encoded_zeros = self._encode(bytes(FRAME_BYTES))  # pads a last short packet
        self._marker = True
        self._due = 0.0  # monotonic time the next packet is due, set at start
        # Keys to send (event code, packets of 20 ms), and the one being sent: [code,
        # start timestamp, packets sent, packets in all]. Only the loop's thread sends.
        self._dtmf_out: deque[tuple[int, int]] = deque(maxlen=_MAX_DTMF_QUEUED)
        self._dtmf_now: list[int] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Join the media loop (the process's shared one unless another was given)."""
        if self._loop is None:
            self._loop = MediaLoop.shared()
        self._due = time.monotonic()
        self._started = True
        self._loop.add(self)

    def stop(self) -> None:
        """Leave the media loop and close the socket (the session owns it from construction).
        Never waits for the loop: the SIP receive thread ends calls, and a call set up or
        ended must not cost it a tick. The loop skips a stopped session from then on and
        drops it at its next tick."""
        self._stopped = True
        if self._started and self._loop is not None:
            self._loop.remove(self)
        if not rtp_ports.close_later(self._sock):  # the allocator's thread closes its own
            self._sock.close()
        with self._out_cond:
            self._closed_out = True
            self._out_cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def set_remote(self, addr: tuple[str, int]) -> None:
        """Where to send, and (unless latching) the only source accepted (re-INVITE)."""
        with self._cond:
            self._remote = _normalise(addr)
            self._latched = False
        self._work_given()

    @property
    def remote(self) -> tuple[str, int] | None:
        return self._remote

    @property
    def packets_in(self) -> int:
        """Packets taken from the phone (audio, keys, comfort noise and other payload types):
        its sign of life for a media timeout (``telephony.media_timeout``); no lock."""
        stats = self._stats
        return stats["received"] + stats["other_payload"]

    @property
    def stats(self) -> dict[str, int]:
        with self._cond:
            out = dict(self._stats)
            out["lost"] = self._lost_before + self._stream_lost()
        return out

    # ------------------------------------------------------------------ receiving
    def _drain(self, limit: int) -> bool:
        """Read what the socket holds (up to ``limit`` datagrams: a flood on one port must not
        starve the other calls' ticks); the loop calls this when the socket is readable.
        True when audio was buffered: the loop then wakes the reader (``_wake_reader``)."""
        sock = self._sock
        buffered = False
        for _ in range(limit):
            try:
                data, source = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if self._stopped:
                    break  # closed under us by stop()
                # ICMP errors from an earlier send surface here; the socket stays usable.
                log.debug("RTP receive error on %s: %s", self.local_address, exc)
                continue
            try:
                buffered |= self._on_datagram(data, source[:2])
            except Exception:
                log.exception("RTP packet from %s could not be handled", source)
                self._stats["malformed"] += 1
        return buffered

    def _wake_reader(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _on_datagram(self, data: bytes, source: tuple[str, int]) -> bool:
        """Handle one datagram; True when it put audio in the jitter buffer."""
        remote = self._remote
        if source != remote and not self._may_latch(source):
            self._stats["foreign_source"] += 1
            if source not in self._foreign_logged and len(self._foreign_logged) < 8:
                self._foreign_logged.add(source)
                moved = remote is not None and (not remote[1] or remote[0] in _HOLD_HOSTS)
                log.log(
                    # a phone's last packets after its media moved away (a relay) are expected
                    logging.INFO if moved else logging.WARNING,
                    "RTP from %s dropped on %s: the call's media is %s%s",
                    source,
                    self.local_address,
                    remote,
                    "" if self._latch or moved else " (a phone behind NAT needs rtp_latch)",
                )
            return False
        if len(data) > 12 and data[0] == _PLAIN_V2:
            # No CSRCs, extension or padding: nearly every packet of every phone. Read in
            # place (what ``parse_rtp`` reads of it), without building an ``RtpPacket``.
            payload_type, marker = data[1] & 0x7F, data[1] >= 0x80
            sequence, timestamp, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
            payload = data[12:]
        else:
            try:
                packet = parse_rtp(data)
            except MalformedPacket as exc:
                self._stats["malformed"] += 1
                log.debug("malformed RTP from %s: %s", source, exc)
                return False
            payload_type, marker = packet.payload_type, packet.marker
            sequence, timestamp, ssrc = packet.sequence, packet.timestamp, packet.ssrc
            payload = packet.payload
        if payload_type == self.payload_type:
            if not payload:
                self._stats["malformed"] += 1
                return False
            audio = True
        elif payload_type == self.dtmf_payload_type:
            audio = False
        else:
            self._stats["other_payload"] += 1  # comfort noise, RTCP on a muxed port, …
            return False
        now = time.monotonic()
        with self._cond:
            if self._latch and not self._latched:
                self._latched = True
                if source != self._remote:
                    log.info(
                        "RTP latched to %s on %s (the SDP said %s)",
                        source,
                        self.local_address,
                        self._remote,
                    )
                self._remote = source
            self._stats["received"] += 1
            if ssrc != self._ssrc:
                self._new_stream(ssrc)
            self._count_sequence(sequence)
            ts = _unwrap(timestamp, self._max_ts, 32)
            if self._max_ts is None or ts > self._max_ts:
                self._max_ts = ts
            if audio:
                return self._buffer_audio(ts, payload, marker, now)
        self._on_event(RtpPacket(marker, payload_type, sequence, timestamp, ssrc, payload))
        return False

    def _may_latch(self, source: tuple[str, int]) -> bool:
        if not self._latch or self._latched:
            return False
        remote = self._remote
        if remote is not None and (not remote[1] or remote[0] in _HOLD_HOSTS):
            # The media went elsewhere (a relay took it: ``sip_reinvite.NOWHERE``) or the
            # phone holds (c=0.0.0.0): a packet it sent before it moved must not bring our
            # comfort silence back to it as a second stream beside the relay's.
            return False
        return self._latch_from is None or source[0] in self._latch_from

    def _new_stream(self, ssrc: int) -> None:
        if self._ssrc is not None:
            log.info("RTP source changed SSRC %08x -> %08x", self._ssrc, ssrc)
            self._lost_before += self._stream_lost()
            self._flush_buffer_to_pending()
        self._ssrc = ssrc
        self._max_ts = None
        self._max_seq = None
        self._stream_received = 0
        self._play_ts = None

    def _count_sequence(self, seq: int) -> None:
        ext = _unwrap(seq, self._max_seq, 16)
        if self._max_seq is None:
            self._base_seq = ext
            self._max_seq = ext
        elif ext > self._max_seq:
            self._max_seq = ext
        self._stream_received += 1

    def _stream_lost(self) -> int:
        if self._max_seq is None:
            return 0
        return max(0, self._max_seq - self._base_seq + 1 - self._stream_received)

    def _buffer_audio(self, ts: int, payload: bytes, marker: bool, now: float) -> bool:
        if self._play_ts is not None and ts < self._play_ts:
            self._stats["late"] += 1
            return False
        if ts in self._buffer:
            return False  # duplicate
        if len(self._heap) >= _MAX_BUFFERED:
            self._buffer.pop(heapq.heappop(self._heap), None)
        self._buffer[ts] = (payload, now, marker)
        heapq.heappush(self._heap, ts)
        return True

    def _on_event(self, packet: RtpPacket) -> None:
        payload = packet.payload
        if len(payload) < 4:
            self._stats["malformed"] += 1
            return
        code = payload[0]
        if code >= len(DTMF_KEYS):
            self._stats["ignored_events"] += 1  # flash, tones: valid RFC 4733 but not keys
            return
        # Every packet of one event, retransmitted end packets included, carries the
        # event's start timestamp: that is its identity. A sender that reuses timestamps for
        # later presses (a replayed capture, some gateways) would lose every repeated digit
        # of a ticket number, so after an event's end a packet that opens an event again —
        # the marker bit, RFC 4733 2.5.1.1 — is a new press; a late copy of any other is not.
        event = (packet.ssrc, packet.timestamp)
        end = bool(payload[1] & 0x80)
        now = time.monotonic()
        state = self._recent_events.get(event)
        if state is not None and not (state.ended and packet.marker and not end):
            state.ended |= end
            state.at = now
            return
        self._recent_events[event] = _Event(ended=end, at=now)
        if len(self._recent_events) > 64:
            for stale in [
                e for e, seen in self._recent_events.items() if now - seen.at > _EVENT_MEMORY_S
            ]:
                del self._recent_events[stale]
        if self._on_dtmf is None:
            return
        try:
            self._on_dtmf(DTMF_KEYS[code])
        except Exception:
            log.exception("DTMF listener failed")

    # ------------------------------------------------------------------ reading
    def read_frame(self, timeout: float) -> bytes | None:
        return self.read_frames(timeout, 1)

    def read_frames(self, timeout: float, max_frames: int) -> bytes | None:
        """``read_frame``, but every whole frame that is ready (up to ``max_frames``) in one
        piece: a reader woken every few ticks takes them all in one trip through the lock."""
        deadline = time.monotonic() + timeout
        limit = max(1, max_frames) * FRAME_BYTES
        drained = False
        while True:
            with self._cond:
                while True:
                    if self._ready >= FRAME_BYTES:
                        if max_frames > 1:  # what else the jitter buffer may give now
                            now = time.monotonic()
                            while self._ready < limit and not self._advance(
                                now, flush=self._closed
                            ):
                                pass
                        self._decode_pending()
                        size = min(limit, self._ready // FRAME_BYTES * FRAME_BYTES)
                        frames = bytes(self._pending[:size])
                        del self._pending[:size]
                        self._ready -= size
                        return frames
                    now = time.monotonic()
                    wait = self._advance(now, flush=self._closed)
                    if wait == 0:
                        continue
                    if self._closed:
                        if self._ready:
                            self._decode_pending()
                            frame = bytes(self._pending) + bytes(FRAME_BYTES - len(self._pending))
                            self._pending.clear()
                            self._ready = 0
                            return frame
                        return None
                    remaining = deadline - now
                    if remaining <= 0:
                        break
                    self._cond.wait(min(remaining, wait))
            # Nothing came through the media loop in time. Before telling the reader the
            # caller sent nothing (it then counts the time as silence), look at the socket
            # itself: a loop held up for a moment (the GIL, a burst of call set-ups) must
            # not turn audio that did arrive into a gap.
            if drained or self._stopped:
                return b""
            drained = True
            with self._recv_lock:
                self._drain(_READER_DRAIN_LIMIT)

    def _advance(self, now: float, *, flush: bool) -> float:
        """Move one packet (or one gap) from the jitter buffer into ``_pending``; 0 when it
        did, else how long to wait before a gap may be declared lost."""
        if not self._heap:
            return float("inf")
        ts = self._heap[0]
        if self._play_ts is None:
            self._play_ts = ts
        if ts < self._play_ts:  # overlaps audio already played
            heapq.heappop(self._heap)
            self._buffer.pop(ts)
            self._stats["late"] += 1
            return 0
        payload, arrived, marker = self._buffer[ts]
        gap = ts - self._play_ts
        if gap:
            span = self._max_ts - self._play_ts if self._max_ts is not None else 0
            waited = now - arrived
            # The marker bit starts a talkspurt: the gap is the sender's silence, not loss.
            if not (flush or marker or span >= self._jitter_samples or waited >= self._jitter_s):
                return self._jitter_s - waited
            if gap <= _MAX_FILL_SAMPLES:
                self._decode_pending()  # what came before the gap goes first
                self._pending += bytes(2 * gap)
                self._ready += 2 * gap
            self._play_ts = ts
            return 0
        heapq.heappop(self._heap)
        del self._buffer[ts]
        self._undecoded.append(payload)
        self._ready += 2 * len(payload)  # G.711: a byte a sample, two bytes of PCM
        self._play_ts = ts + len(payload)
        return 0

    def _decode_pending(self) -> None:
        if self._undecoded:
            self._pending += self._decode(b"".join(self._undecoded))
            self._undecoded.clear()

    def _flush_buffer_to_pending(self) -> None:
        while self._heap:
            self._advance(time.monotonic(), flush=True)

    # ------------------------------------------------------------------ sending
    def send_audio(self, pcm16: bytes) -> None:
        if len(pcm16) % 2:
            pcm16 = pcm16[:-1]
        # Encoded here, all at once (G.711 is sample by sample): the media loop then only
        # cuts packets, instead of encoding every packet of every call on its tick.
        encoded = self._encode(pcm16)
        with self._out_cond:
            self._out += encoded
        self._work_given()

    def clear_audio(self) -> None:
        with self._out_cond:
            self._out.clear()
            self._out_cond.notify_all()

    @property
    def queued_ms(self) -> int:
        """Audio queued and not yet sent: a relay keeps this bounded (``telephony.bridge``)."""
        return len(self._out) // (FRAME_SAMPLES // 20)  # encoded: a byte a sample, 8 a ms

    def send_dtmf(self, key: str, duration_ms: int = DTMF_SEND_MS) -> bool:
        """Queue a key press as RFC 4733 telephone-events (False when the peer's SDP had no
        telephone-event, or the key is not one). The event replaces the audio of its 20 ms
        slots, as a phone's keypad does: what plays meanwhile is dropped, not delayed, so a
        key passed on in a bridge adds no lasting latency."""
        if self.dtmf_payload_type is None or len(key) != 1 or key.upper() not in DTMF_KEYS:
            return False
        packets = max(2, round(duration_ms / 20))
        with self._out_cond:
            self._dtmf_out.append((DTMF_KEYS.index(key.upper()), packets))
        self._work_given()
        return True

    def _work_given(self) -> None:
        """Something to send, or somewhere to send it: a parked session is ticked again. (The
        loop marks a session parked before it looks at its work a last time, so work given
        just then is seen by one side or the other.)"""
        if self._parked and self._loop is not None:
            self._loop.unpark(self)

    def _send_event(self) -> bool:
        """Send the next packet of a queued key, if any (the loop's thread); True if sent."""
        event = self._dtmf_now
        if event is None:
            if not self._dtmf_out:
                return False
            with self._out_cond:
                code, packets = self._dtmf_out.popleft()
            event = self._dtmf_now = [code, self._ts, 0, packets]
        code, start_ts, sent, packets = event
        sent += 1
        event[2] = sent
        end = sent >= packets
        duration = FRAME_SAMPLES * min(sent, packets)
        payload = struct.pack("!BBH", code, (0x80 if end else 0) | _DTMF_VOLUME, duration)
        for _ in range(_DTMF_END_COPIES if end else 1):
            self._send_raw(payload, self.dtmf_payload_type or 101, start_ts, marker=sent == 1)
        if end:
            self._dtmf_now = None
        # The audio of this slot is dropped (see ``send_dtmf``).
        if self._out:
            with self._out_cond:
                del self._out[:FRAME_SAMPLES]
                if not self._out:
                    self._out_cond.notify_all()
        self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
        return True

    def _send_raw(self, payload: bytes, payload_type: int, timestamp: int, *, marker: bool) -> None:
        remote = self._remote
        if remote is None or not remote[1] or remote[0] in _HOLD_HOSTS:
            return
        packet = (
            HEADER.pack(
                0x80,
                (0x80 if marker else 0) | payload_type,
                self._seq,
                timestamp,
                self._out_ssrc,
            )
            + payload
        )
        self._seq = (self._seq + 1) & 0xFFFF
        try:
            self._sock.sendto(packet, remote)
            self._stats["sent"] += 1
        except OSError as exc:
            log.debug("RTP send to %s failed: %s", remote, exc)

    def wait_sent(self, timeout: float | None = None) -> bool:
        """True once everything queued has gone out; False on timeout or stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._out_cond:
            while self._out or self._in_flight:
                if self._closed_out:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._out_cond.wait(remaining)
            return True

    def _idle(self) -> bool:
        """Nowhere to send and nothing queued: a leg whose media moved to rtpengine, a phone
        holding (c=0.0.0.0)."""
        remote = self._remote
        return (
            (remote is None or not remote[1] or remote[0] in _HOLD_HOSTS)
            and not self._out
            and not self._in_flight
            and not self._dtmf_out
            and self._dtmf_now is None
        )

    def _send_due(self, now: float) -> bool:
        """Send the packets due by ``now`` (one a tick, more after a late tick); the loop
        calls this every tick. True when the session is idle (``_idle``): the loop parks it."""
        if now - self._due > MAX_SEND_BEHIND_S:
            self._due = now  # after a stall, resume the pace instead of bursting
        remote = self._remote  # a talking session (most of them) is told apart inline
        if (remote is None or not remote[1] or remote[0] in _HOLD_HOSTS) and self._idle():
            self._resume(now)  # only the clock runs on, as ``_send_one`` would move it
            return True
        while self._due <= now + TICK_S / 2:
            self._send_one()
            self._due += FRAME_SAMPLES / 8000
        return False

    def _resume(self, now: float) -> None:
        """Move the clock (the next packet's time, sequence number and timestamp) on to
        ``now`` without sending: the packets of a session with nowhere to send, ticked idle
        or parked meanwhile, as ``_send_one`` would have moved it."""
        frame_s = FRAME_SAMPLES / 8000
        if self._due > now + TICK_S / 2:
            return
        packets = int((now + TICK_S / 2 - self._due) // frame_s) + 1
        self._due += packets * frame_s
        self._seq = (self._seq + packets) & 0xFFFF
        self._ts = (self._ts + packets * FRAME_SAMPLES) & 0xFFFFFFFF

    def _send_one(self) -> None:
        if (self._dtmf_out or self._dtmf_now is not None) and self._send_event():
            return
        if not self._out and not self._in_flight:
            # Nothing queued (most ticks of most calls): comfort silence without the lock.
            # Only this thread clears ``_in_flight``; audio queued meanwhile goes next tick,
            # as it would had it come just after the lock.
            self._send_packet(self._silence)
            return
        with self._out_cond:
            chunk = bytes(self._out[:FRAME_SAMPLES])  # encoded: a byte a sample
            del self._out[:FRAME_SAMPLES]
            self._in_flight = bool(chunk)
            if not chunk:
                self._out_cond.notify_all()
        if chunk:
            if len(chunk) < FRAME_SAMPLES:  # the end of the audio, padded with zero samples
                chunk += self._encoded_zeros[: FRAME_SAMPLES - len(chunk)]
            payload = chunk
        else:
            payload = self._silence
        self._send_packet(payload)
        if chunk:
            with self._out_cond:
                self._in_flight = False
                if not self._out:
                    self._out_cond.notify_all()

    def _send_packet(self, payload: bytes) -> None:
        remote = self._remote
        if remote is not None and remote[1] and remote[0] not in _HOLD_HOSTS:
            packet = (
                HEADER.pack(
                    0x80,
                    (0x80 if self._marker else 0) | self.payload_type,
                    self._seq,
                    self._ts,
                    self._out_ssrc,
                )
                + payload
            )  # build_rtp's packet, without its keyword call on every packet of every call
            try:
                self._sock.sendto(packet, remote)
                self._stats["sent"] += 1
                self._marker = False
            except OSError as exc:
                log.debug("RTP send to %s failed: %s", remote, exc)
        # Sequence and timestamp advance even when a send fails, as RFC 3550 expects
        # of a sender whose clock keeps running.
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
