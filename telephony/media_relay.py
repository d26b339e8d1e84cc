"""Bridged calls' media through rtpengine (``HOTLINE_TELEPHONY__MEDIA_RELAY=rtpengine``).

The caller was answered with the edge's own RTP port (greeting, queue) and the agent's seat
was dialled with it too. When the two are bridged, ``RtpengineRelay.take`` moves both
phones' media onto rtpengine: the caller's SDP is offered to rtpengine, the agent is
re-INVITEd with rtpengine's offer, the agent's answer is rtpengine's ``answer``, and the
caller is re-INVITEd with what rtpengine made of it; then rtpengine taps both parties to the
edge (``rtpengine.MediaTap``'s receive-only sessions), and the process's ``TapPump`` hands
what each said to the bridge — the stereo recording, the live transcript and any
monitoring supervisor's mix — five times a second for every relayed call at once; the
bridge's own relay threads only wait for a hang-up or for the media to come back
(``RelayedCall.wait``). The phones hear each other, keys included (RFC 4733 passes
through), without Python in the path.

The console's hold stays on rtpengine (``RelayedCall.hold``): rtpengine plays the hold audio
to the caller (ng ``play media``, the audio sent along as a μ-law WAV) and blocks each
party's media to the other; unhold is ``stop media`` and ``unblock media``. Anything else
that needs the edge to touch the audio — transfers, three-way, a hold rtpengine refused —
first gives the media back (``RelayedCall.give_back``: both phones re-INVITEd to the edge's
ports, the rtpengine call deleted) and then runs on the edge's own relay, as in ``own``
mode. A phone's own re-INVITE (a hold key, a session refresh) is answered by the edge with
its own port, as always; the bridge sees it (``moved``) and gives the other phone's media
back too.

The taps' sockets come from the edge's RTP ports (``ports``, the edge's allocator), so a
firewall opened for the edge's range lets rtpengine's copies in; they go back at the end.
A party whose tap carried nothing for the edge's media timeout has gone silent
(``telephony.media_timeout``): the bridge hangs the call up.

If setting up fails (rtpengine away, a phone refusing the re-INVITE) the call stays on — or
is put back on — the edge's own relay, with a warning: a caller is never left unbridged.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from typing import Any, Protocol

from telephony import codecs
from telephony.recording import Side
from telephony.rtp_ports import RtpPortAllocator
from telephony.rtpengine import (
    AGENT_TAG,
    CALLER_TAG,
    MediaTap,
    NgClient,
    RtpengineError,
    Sink,
    TapPump,
)
from telephony.sip_sdp import build_sdp

log = logging.getLogger(__name__)


class Reinviting(Protocol):
    """What the relay needs of the edge (``telephony.sip_reinvite.ReInvites``)."""

    def reinvite(self, call: Any, sdp: bytes) -> Any: ...
    def reinvite_away(self, call: Any, sdp: bytes) -> Any: ...
    def reinvite_to_edge(self, call: Any) -> Any: ...
    def media_back(self, call: Any) -> None: ...


def ng_address(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) of rtpengine's ng listener."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"rtpengine ng address must be host:port, not {value!r}")
    return host.strip("[]"), int(port)


def phone_sdp(leg: Any) -> bytes:
    """The SDP a phone's media has with the edge now: its address, codec and keys."""
    host, port = leg.remote_rtp
    return build_sdp(
        host=host,
        port=port,
        session_id=1,
        version=1,
        payload_types=[leg.payload_type],
        dtmf=leg.dtmf_payload_type,
        dtmf_events=leg.dtmf_events,
    )


# rtpengine takes a media file in one ng datagram (``play media``'s ``blob``): at most 64 KB, so
# the hold audio goes as μ-law (a byte a sample), its first 6 s looped — the built-in hold
# music's arpeggio repeats every 2 s.
_HOLD_BLOB_S = 6
_HOLD_REPEATS = 10_000  # 16 hours of a 6 s loop: until ``stop media``
_WAVE_FORMAT_MULAW = 7


def hold_wav(pcm: bytes, *, max_s: float = _HOLD_BLOB_S) -> bytes:
    """``pcm`` (16-bit, 8 kHz mono; at most ``max_s`` of it) as a μ-law WAV file's bytes."""
    data = codecs.ulaw_encode(pcm[: int(max_s * 8000) * 2])
    fmt = struct.pack("<HHIIHHH", _WAVE_FORMAT_MULAW, 1, 8000, 8000, 1, 8, 0)
    chunks = [
        b"fmt " + struct.pack("<I", len(fmt)) + fmt,
        b"fact" + struct.pack("<II", 4, len(data)),  # samples: what a non-PCM WAV must say
        b"data" + struct.pack("<I", len(data)) + data,
    ]
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


class RelayedCall:
    """One bridged call whose phones send to rtpengine; the edge reads its taps."""

    def __init__(
        self,
        relay: RtpengineRelay,
        *,
        call_id: str,
        caller: Any,
        agent: Any,
        tap: MediaTap,
        to_caller: str,
    ) -> None:
        self.relay = relay
        self.call_id = call_id
        self.legs = {Side.CALLER: caller, Side.AGENT: agent}
        self.tap = tap
        self.to_caller = to_caller
        # A re-INVITE from a phone after this (``SipCall.reinvites_received``) took its
        # media back to the edge.
        self._marks = {side: leg.reinvites_received for side, leg in self.legs.items()}
        self._ended = False
        self._lock = threading.Lock()
        self._wake = {side: threading.Event() for side in self.legs}
        self.holding = False  # rtpengine plays the hold audio to the caller (``hold``)

    def side_of(self, leg: Any) -> Side | None:
        for side, mine in self.legs.items():
            if mine is leg:
                return side
        return None

    def moved(self, side: Side) -> bool:
        return self.legs[side].reinvites_received != self._marks[side]

    def any_moved(self) -> bool:
        return self.moved(Side.CALLER) or self.moved(Side.AGENT)

    def start(self, sink: Sink) -> None:
        """The taps' audio to ``sink`` (the bridge's recording, live transcript and
        monitoring mixes), from the relay's ``TapPump``."""
        self.tap.open(sink)
        self.relay.pump.add(self)

    def pump(self, now: float) -> None:
        """The pump's sweep: a leg that ended or a phone that moved its media wakes the
        bridge's relays (``wait``); what each party said goes to the sink."""
        if self.any_moved() or any(leg.ended.is_set() for leg in self.legs.values()):
            self.wake()
        self.tap.pump(now)

    def wait(self, side: Side, timeout: float) -> bool:
        """Block the bridge's relay of ``side`` until something may have changed for it (a
        leg ended, a phone moved its media, the media given back) or ``timeout``; False once
        its leg has ended. The audio does not pass here: the pump hands it on."""
        woken = self._wake[side]
        woken.wait(timeout)
        woken.clear()
        return not self.legs[side].ended.is_set()

    def wake(self) -> None:
        for event in self._wake.values():
            event.set()

    def packets_in(self, side: Side) -> int:
        """What ``side``'s phone has sent so far, as its tap saw it (the media timeout's sign
        of life: the phones send to rtpengine, the edge receives only the taps)."""
        return self.tap.packets_in(side)

    def still_heard(self, side: Side, within_s: float) -> bool:
        """Whether rtpengine itself received RTP from ``side``'s phone within ``within_s``
        (``query``'s "last packet" of the party's streams): a quiet tap with a phone that
        still sends is a tap whose copies do not reach the edge (a firewall on the edge's
        RTP ports, say), not a phone gone. False when rtpengine cannot tell."""
        tag = CALLER_TAG if side is Side.CALLER else AGENT_TAG
        try:
            answer = self.relay.ng.query(call_id=self.call_id)
        except RtpengineError as exc:
            log.info("call %s: rtpengine query failed: %s", self.call_id, exc)
            return False
        party = answer.get("tags", {}).get(tag, {})
        last = [
            stream["last packet"]
            for media in party.get("medias", [])
            for stream in media.get("streams", [])
            if "RTP" in stream.get("flags", []) and isinstance(stream.get("last packet"), int)
        ]
        return bool(last) and time.time() - max(last) < within_s

    def hold(self, audio: bytes) -> bool:
        """The caller hears ``audio`` looped, played by rtpengine (``play media``), and the
        parties no longer hear each other (``block media`` each way). rtpengine 10.5 blocks
        a party's taps with its flow to the other party (the ``to-tag`` does not spare
        them; ``silence media`` neither), so the recording and the live transcript get
        silence while the call is held. False, nothing changed, when rtpengine refused."""
        ng, call_id = self.relay.ng, self.call_id
        playing = False
        try:
            ng.command(
                "play media",
                call_id=call_id,
                from_tag=CALLER_TAG,  # who hears it
                blob=hold_wav(audio),
                repeat_times=_HOLD_REPEATS,
            )
            playing = True
            for source, to in ((AGENT_TAG, CALLER_TAG), (CALLER_TAG, AGENT_TAG)):
                ng.command("block media", call_id=call_id, from_tag=source, to_tag=to)
        except RtpengineError as exc:
            log.warning("call %s: rtpengine did not hold (%s)", self.call_id, exc)
            if playing:
                self._resume()
            return False
        self.holding = True
        log.info("call %s: held on rtpengine", self.call_id)
        return True

    def unhold(self) -> None:
        """The hold audio stops and the parties hear each other again."""
        if self.holding:
            self.holding = False
            self._resume()

    def _resume(self) -> None:
        ng, call_id = self.relay.ng, self.call_id
        commands = [("stop media", {"from_tag": CALLER_TAG})] + [
            ("unblock media", {"from_tag": source, "to_tag": to})
            for source, to in ((CALLER_TAG, AGENT_TAG), (AGENT_TAG, CALLER_TAG))
        ]
        for name, params in commands:
            try:
                ng.command(name, call_id=call_id, **params)
            except RtpengineError as exc:  # "stop media" with nothing playing, say
                log.info("call %s: rtpengine %s: %s", self.call_id, name, exc)

    def give_back(self) -> bool:
        """Both phones' media back to the edge's own ports, then the rtpengine call ends.
        False, with both still on rtpengine, when the caller's phone refuses; when the
        agent's refuses after the caller moved, the caller is put back on rtpengine."""
        if any(leg.ended.is_set() for leg in self.legs.values()):
            self.end()  # the call is ending: nothing to move
            return True
        try:
            return self._give_back()
        except Exception:  # a phone hung up meanwhile, say: the call ends on its own
            log.exception("call %s: giving the media back failed", self.call_id)
            return False

    def _give_back(self) -> bool:
        edge = self.relay.edge
        caller, agent = self.legs[Side.CALLER], self.legs[Side.AGENT]
        if not self.moved(Side.CALLER) and not edge.reinvite_to_edge(caller).ok:
            log.error("call %s: the caller's media stays on rtpengine", self.call_id)
            return False
        if not self.moved(Side.AGENT) and not edge.reinvite_to_edge(agent).ok:
            log.error("call %s: the agent's media stays on rtpengine", self.call_id)
            if not self.moved(Side.CALLER):
                edge.reinvite_away(caller, self.to_caller.encode())
            return False
        for side in (Side.CALLER, Side.AGENT):
            if self.moved(side):
                edge.media_back(self.legs[side])
        log.info("call %s: media back on the edge's own relay", self.call_id)
        self.end()
        return True

    def end(self) -> None:
        """Stop the taps — what they still held goes to the sink first — and delete the
        call in rtpengine (once)."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
        self.relay.pump.remove(self)
        self.tap.stop()
        self.wake()
        try:
            self.relay.ng.delete(call_id=self.call_id)
        except RtpengineError as exc:
            log.warning("call %s: rtpengine delete failed: %s", self.call_id, exc)


class RtpengineRelay:
    """Puts bridged calls' media on rtpengine (ng at ``ng``); taps arrive at ``tap_host``."""

    def __init__(
        self,
        *,
        ng: NgClient,
        tap_host: str,
        edge: Reinviting,
        pump: TapPump | None = None,
        ports: RtpPortAllocator | None = None,
    ) -> None:
        self.ng = ng
        self.tap_host = tap_host
        self.edge = edge
        self.pump = pump if pump is not None else TapPump.shared()  # every call's taps
        self.ports = ports  # the edge's RTP ports, for the taps (None: any free port)

    def take(self, caller: Any, agent: Any) -> RelayedCall | None:
        """Move both phones onto rtpengine; None (both still on the edge's own ports)
        when that cannot be done — also when a phone hangs up meanwhile: the bridge's own
        relay then sees the hang-up and ends the call as it always does."""
        if not all(hasattr(leg, "reinvites_received") for leg in (caller, agent)):
            return None  # not calls of this edge
        call_id = f"{caller.sip_call_id}/bridge"
        try:
            return self._take(caller, agent, call_id)
        except Exception:
            log.exception("call %s: media not moved to rtpengine (own relay)", caller.call_id)
            self._back(agent)
            self._back(caller)
            self._delete(call_id)
            return None

    def _take(self, caller: Any, agent: Any, call_id: str) -> RelayedCall | None:
        try:
            to_agent = self.ng.offer(
                call_id=call_id, from_tag=CALLER_TAG, sdp=phone_sdp(caller).decode()
            )
        except RtpengineError as exc:
            log.warning("call %s: rtpengine offer failed (own relay): %s", caller.call_id, exc)
            return None
        agent_result = self.edge.reinvite_away(agent, to_agent.encode())
        if not agent_result.ok:
            log.warning(
                "call %s: the agent refused rtpengine's media (%s, own relay)",
                caller.call_id,
                agent_result.status,
            )
            self._delete(call_id)
            return None
        tap = MediaTap(host=self.tap_host, payload_type=caller.payload_type, ports=self.ports)
        caller_moved = False
        try:
            to_caller = self.ng.answer(
                call_id=call_id,
                from_tag=CALLER_TAG,
                to_tag=AGENT_TAG,
                sdp=agent_result.body.decode(),
            )
            caller_result = self.edge.reinvite_away(caller, to_caller.encode())
            if not caller_result.ok:
                raise RtpengineError(f"the caller refused rtpengine ({caller_result.status})")
            caller_moved = True
            tap.subscribe(self.ng, call_id=call_id)
        except Exception as exc:
            log.warning("call %s: %s: back to the own relay", caller.call_id, exc)
            self._back(agent)
            if caller_moved:
                self._back(caller)
            tap.stop()
            self._delete(call_id)
            return None
        log.info("call %s: media on rtpengine (%s)", caller.call_id, call_id)
        return RelayedCall(
            self, call_id=call_id, caller=caller, agent=agent, tap=tap, to_caller=to_caller
        )

    def _back(self, leg: Any) -> None:
        """A leg's media back to the edge, unless it ended (best effort: a failure is
        logged, the bridge's own relay carries on)."""
        if leg.ended.is_set():
            return
        try:
            self.edge.reinvite_to_edge(leg)
        except Exception:
            log.exception("call %s: media not brought back to the edge", leg.call_id)

    def _delete(self, call_id: str) -> None:
        try:
            self.ng.delete(call_id=call_id)
        except RtpengineError as exc:
            log.warning("rtpengine delete of %s failed: %s", call_id, exc)
