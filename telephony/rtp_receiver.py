"""A receive-only RTP session: a copy of someone's audio that the edge only listens to.

rtpengine taps each party of a bridged call back to the edge (``rtpengine.MediaTap``) for the
recording and the live transcript; nothing is ever sent back. A full ``RtpSession`` there
paced comfort silence to rtpengine every 20 ms (which it dropped), had the media loop drain
its socket on every tick and wake its reader every 100 ms, and parsed, buffered and decoded
each packet on its own: the taps of a few hundred calls cost the SIP process as much CPU as
relaying the calls had. ``RtpReceiver`` keeps the reading contract of
``RtpSession.read_frames`` (frames in timestamp order, missing packets and the sender's pauses
as silence, ``b""`` when nothing came, ``None`` after ``stop``) and does the least per packet:

- It is not in the media loop: nothing to send, and its reader takes what the socket holds
  when it reads — one wake-up a read (a bridge reads every 200 ms), not the loop's work on
  every tick plus a wake-up every 100 ms. The socket's buffer holds the packets meanwhile.
- The socket is ``connect``ed to the one source it accepts, so the kernel drops anyone
  else's datagrams and taking a packet is ``recv`` and a list append.
- A read parses what came in one pass, orders it (the jitter buffer's rules: a gap waits
  ``jitter_ms`` for a late packet, unless the marker bit says the sender paused), and decodes
  the G.711 of a read in one table lookup, not one a packet.
- RFC 4733 events and other payload types are counted and dropped (rtpengine passes keys
  between the phones; the edge does not act on a tap's).
"""

from __future__ import annotations

import bisect
import logging
import socket
import time

from telephony.endpoint import FRAME_BYTES
from telephony.rtp_packet import MalformedPacket, parse_rtp
from telephony.rtp_session import (
    _HOLD_HOSTS,
    _MAX_FILL_SAMPLES,
    _PLAIN_V2,
    _SEQ_TS_SSRC,
    RtpSession,
    _unwrap,
)

log = logging.getLogger(__name__)

_MAX_DATAGRAM = 2048
# Packets held for the reader at most (10 minutes of 20 ms packets), as RtpSession buffers.
_MAX_HELD = 30_000
# Datagrams one read takes at most: a minute of a 20 ms stream (a reader held up that long).
_READ_DRAIN_LIMIT = 3000


class RtpReceiver(RtpSession):
    """Receives one source's RTP (``remote``; ``set_remote`` moves it) and sends nothing.
    Read it as an ``RtpSession``; ``send_audio`` and ``send_dtmf`` refuse."""

    def __init__(
        self,
        *,
        local_host: str,
        port: int,
        remote: tuple[str, int] | None,
        payload_type: int,
        sock: socket.socket | None = None,
        jitter_ms: int = 60,
        receive_buffer_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        super().__init__(
            local_host=local_host,
            port=port,
            sock=sock,  # bound already (``RtpPortAllocator``), or bound here to ``port``
            remote=None,
            payload_type=payload_type,
            dtmf_payload_type=None,
            jitter_ms=jitter_ms,
            receive_buffer_bytes=receive_buffer_bytes,
        )
        self._connected = False
        # Datagrams taken off the socket, not yet looked at (guarded by _cond).
        self._raw: list[bytes] = []
        # Audio packets in timestamp order, waiting for the reader: (unwrapped ts, arrival,
        # marker, payload); the reader's own state, guarded by _cond.
        self._held: list[tuple[int, float, bool, bytes]] = []
        if remote is not None:
            self.set_remote(remote)

    # ------------------------------------------------------------------ the source
    def set_remote(self, addr: tuple[str, int]) -> None:
        """The only source accepted: the socket is connected to it, so the kernel filters."""
        super().set_remote(addr)
        remote = self._remote
        if remote is None or not remote[1] or remote[0] in _HOLD_HOSTS:
            self._connected = False  # nowhere: whatever comes is dropped
            return
        try:
            self._sock.connect(remote)
            self._connected = True
        except OSError as exc:
            log.warning("RTP receiver on %s cannot lock to %s: %s", self.local_address, remote, exc)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Nothing to start: the reader takes the socket's packets when it reads."""

    def stop(self) -> None:
        """What the socket still holds is taken first, so the reader gets it before None."""
        with self._recv_lock:
            if not self._stopped:
                self._drain(_READ_DRAIN_LIMIT)
        super().stop()

    def send_audio(self, pcm16: bytes) -> None:
        raise RuntimeError(f"RTP receiver on {self.local_address} sends nothing")

    def send_dtmf(self, key: str, duration_ms: int = 0) -> bool:
        raise RuntimeError(f"RTP receiver on {self.local_address} sends nothing")

    # ------------------------------------------------------------------ reading
    def _drain(self, limit: int) -> bool:
        """Take up to ``limit`` datagrams off the socket; True when any came."""
        sock = self._sock
        got: list[bytes] = []
        connected = self._connected
        for _ in range(limit):
            try:
                if connected:
                    got.append(sock.recv(_MAX_DATAGRAM))
                else:
                    data, source = sock.recvfrom(_MAX_DATAGRAM)
                    self._stats["foreign_source"] += 1  # no source to accept yet
                    log.debug(
                        "RTP from %s dropped on %s: no source yet", source, self.local_address
                    )
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if self._stopped:
                    break  # closed under us by stop()
                log.debug("RTP receive error on %s: %s", self.local_address, exc)
                continue
        if not got:
            return False
        with self._cond:
            self._raw += got
        return True

    def read_frames(self, timeout: float, max_frames: int) -> bytes | None:
        """Every whole frame that came by ``timeout`` (up to ``max_frames``; at once when
        that many are there): one wake-up a read. ``b""`` when none came; None after
        ``stop`` once everything received has been read."""
        deadline = time.monotonic() + timeout
        limit = max(1, max_frames) * FRAME_BYTES
        while True:
            if not self._stopped:
                with self._recv_lock:
                    self._drain(_READ_DRAIN_LIMIT)
            with self._cond:
                now = time.monotonic()
                wait = self._take(now, flush=self._closed)
                pending = len(self._pending)
                if pending >= limit or (
                    pending >= FRAME_BYTES and (now >= deadline or self._closed)
                ):
                    size = min(limit, pending // FRAME_BYTES * FRAME_BYTES)
                    frames = bytes(self._pending[:size])
                    del self._pending[:size]
                    return frames
                if self._closed:
                    if self._pending:
                        frame = bytes(self._pending) + bytes(FRAME_BYTES - pending)
                        self._pending.clear()
                        return frame
                    return None
                if now >= deadline:
                    return b""
                self._cond.wait(min(deadline - now, wait))

    def _take(self, now: float, *, flush: bool) -> float:
        """Parse what came, then move every packet that may be played into ``_pending`` as
        PCM (decoded in one piece); how long to wait before a gap may be taken as lost
        (``inf`` when nothing is held)."""
        if self._raw:
            raw, self._raw = self._raw, []
            self._parse(raw, now)
        held = self._held
        if not held:
            return float("inf")
        runs: list[bytes | int] = []  # μ-law/A-law payloads, or samples of silence
        play = self._play_ts
        taken = 0
        wait = float("inf")
        for ts, arrived, marker, payload in held:
            if play is None:
                play = ts
            if ts < play:  # overlaps audio already played
                self._stats["late"] += 1
                taken += 1
                continue
            gap = ts - play
            if gap:
                span = held[-1][0] - play
                waited = now - arrived
                # The marker bit starts a talkspurt: the gap is the sender's pause, not loss.
                if not (
                    flush or marker or span >= self._jitter_samples or waited >= self._jitter_s
                ):
                    wait = self._jitter_s - waited
                    break
                if gap <= _MAX_FILL_SAMPLES:
                    runs.append(gap)
            runs.append(payload)
            play = ts + len(payload)
            taken += 1
        del held[:taken]
        self._play_ts = play
        if runs:
            self._pending += self._pcm(runs)
        return wait if held else float("inf")

    def _pcm(self, runs: list[bytes | int]) -> bytes:
        if all(isinstance(r, bytes) for r in runs):
            return self._decode(b"".join(runs))  # type: ignore[arg-type]
        out = []
        piece: list[bytes] = []
        for run in runs:
            if isinstance(run, bytes):
                piece.append(run)
                continue
            if piece:
                out.append(self._decode(b"".join(piece)))
                piece = []
            out.append(bytes(2 * run))
        if piece:
            out.append(self._decode(b"".join(piece)))
        return b"".join(out)

    def _parse(self, raw: list[bytes], now: float) -> None:
        """Datagrams → held audio packets, in timestamp order (guarded by _cond)."""
        stats = self._stats
        held = self._held
        pt = self.payload_type
        for data in raw:
            if len(data) > 12 and data[0] == _PLAIN_V2:
                marker, payload_type = data[1] & 0x80, data[1] & 0x7F
                seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
                payload = data[12:]
            else:
                try:
                    packet = parse_rtp(data)
                except MalformedPacket:
                    stats["malformed"] += 1
                    continue
                marker, payload_type = packet.marker, packet.payload_type
                seq, ts, ssrc = packet.sequence, packet.timestamp, packet.ssrc
                payload = packet.payload
            if payload_type != pt or not payload:
                stats["other_payload"] += 1  # keys, comfort noise: rtpengine's business
                continue
            stats["received"] += 1
            if ssrc != self._ssrc:
                self._new_source(ssrc, now)
            ext = _unwrap(seq, self._max_seq, 16)
            if self._max_seq is None:
                self._base_seq = ext
                self._max_seq = ext
            elif ext > self._max_seq:
                self._max_seq = ext
            self._stream_received += 1
            uts = _unwrap(ts, self._max_ts, 32)
            if self._max_ts is None or uts > self._max_ts:
                self._max_ts = uts
            entry = (uts, now, bool(marker), payload)
            if not held or uts > held[-1][0]:
                held.append(entry)  # in order: every packet but a reordered one
            else:
                at = bisect.bisect_left(held, uts, key=lambda e: e[0])
                if at < len(held) and held[at][0] == uts:
                    continue  # a duplicate
                held.insert(at, entry)
            if len(held) > _MAX_HELD:
                del held[0]

    def _new_source(self, ssrc: int, now: float) -> None:
        """Another SSRC: what the old one sent is played out first, then the new timeline
        starts where it begins (no gap, no overlap)."""
        if self._ssrc is not None:
            log.info("RTP source changed SSRC %08x -> %08x", self._ssrc, ssrc)
            self._lost_before += self._stream_lost()
            self._take(now, flush=True)
            self._play_ts = None
        self._ssrc = ssrc
        self._max_ts = None
        self._max_seq = None
        self._stream_received = 0
