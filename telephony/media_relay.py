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

Anything that needs the edge to touch the audio — hold (the console's or the agent phone's
key), transfers, three-way — first gives the media back (``RelayedCall.give_back``: both
phones re-INVITEd to the edge's ports, the rtpengine call deleted) and then runs on the
edge's own relay, as in ``own`` mode. A phone's own re-INVITE (a hold key, a session
refresh) is answered by the edge with its own port, as always; the bridge sees it
(``moved``) and gives the other phone's media back too.

If setting up fails (rtpengine away, a phone refusing the re-INVITE) the call stays on — or
is put back on — the edge's own relay, with a warning: a caller is never left unbridged.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from telephony.recording import Side
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
        self, *, ng: NgClient, tap_host: str, edge: Reinviting, pump: TapPump | None = None
    ) -> None:
        self.ng = ng
        self.tap_host = tap_host
        self.edge = edge
        self.pump = pump if pump is not None else TapPump.shared()  # every call's taps

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
        tap = MediaTap(host=self.tap_host, payload_type=caller.payload_type)
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
