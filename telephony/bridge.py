"""The bridge: a caller and an agent talking through the edge (a B2BUA with its own relay).

Over 600 lines because the relay threads and every change of legs (transfer, consultation,
three-way, monitoring) read and swap the same legs under one lock, in the middle of a call:
split apart, each half would reach into the other's state.

Both legs are answered ``Call``s — the caller's inbound, the agent's from ``dial`` — and the
edge relays between them rather than re-INVITE the phones to each other: the platform keeps
the media, so it records both sides, transcribes each speaker apart, and can hold, transfer
or monitor later. One relay thread per direction reads its leg as the flows do (every frame
that came since the last wake-up, gaps as silence, ``b""`` when nothing came) and queues it to
the other leg, whose session paces it out at 20 ms a packet.

- Delay stays bounded, and so do gaps. A reader is woken every few ticks and takes what came
  meanwhile (``telephony.media_loop``), so audio reaches the other leg in chunks of about
  100 ms: when the other leg has run dry, a ``cushion_ms`` of silence goes ahead of the
  chunk, so the next chunk, a wake-up later, arrives before this one has played out (without
  it the far end hears a gap at every late wake-up). When the other leg already holds more
  than ``max_queued_ms`` unsent (a burst after a network stall) the backlog is dropped, not
  played late for the rest of the call. Both are counted.
- Keys pass through: a key one side presses is sent to the other as RFC 4733 events (a
  department's IVR behind a transfer, a caller's extension).
- Hold, from the agent's phone (its hold key: a re-INVITE with a=sendonly or a=inactive) or
  by ``hold``: the caller hears the hold audio and the agent hears nothing of the caller;
  both sides are still recorded.
- Either side's hang-up ends both (the other gets a BYE).
- One stereo WAV, caller left and agent right, written as the mono recordings are (a crash
  leaves a file that plays; ``repair_wav`` fixes its header); ``on_audio`` sees each side's
  frames in order for live transcription with speaker labels.
- Transfers (``transfer``, ``consult``; the states in ``telephony.transfer``): the caller is
  held while the target rings and comes back to the first agent when it does not answer; the
  agent's side of the relay then reads the new leg, so the recording goes on in one file
  (caller left, whoever talks to the caller right) and ``on_transfer`` counts each change.
- Three-way (三方通话, ``merge`` after ``consult``): the consulted party joins instead of
  taking over; each leg then hears the other two summed by a ``telephony.mixer.Mixer`` (the
  recording's right channel the agent and the third party mixed). When the agent leaves the
  third party takes the agent's place; when the third party leaves the call is two-party again.
- Silent monitoring (``monitor``): a supervisor's leg hears everyone mixed; what it says goes
  nowhere.
- With ``relay`` (rtpengine mode, ``telephony.media_relay``) the phones talk through
  rtpengine: the process's tap pump hands its taps' audio to ``_tapped`` (recording,
  transcript, monitoring mixes) and the relays only wait for a hang-up; rtpengine plays the
  hold audio itself, transfers and three-way first bring the media back to the edge.
- A leg whose phone sent no RTP for the media timeout (``rtp_timeout_s``, the edge's
  setting by default; ``telephony.media_timeout``) ends the call: both legs get our BYE and
  are recorded with the disposition ``media_timeout``.
- The agent's phone may transfer with its own key: its REFER (``SipCall.on_refer``, set here
  on whichever leg is the agent's) starts a blind transfer, and the phone is told the outcome
  before our BYE. A REFER with Replaces is declined: the call it would replace (the phone's
  own consultation) is not one this bridge relays.

"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from telephony.endpoint import FRAME_BYTES, FRAME_MS, Call, CallFailed, Disposition
from telephony.media_relay import RelayedCall, RtpengineRelay
from telephony.media_timeout import MediaWatch, expects_media
from telephony.mixer import Mixer
from telephony.recording import Side, StereoRecorder, recording_path
from telephony.sip_refer import Refer
from telephony.transfer import (
    Dial,
    Transfer,
    TransferKind,
    TransferOutcome,
    TransferRefused,
    TransferState,
    sip_status,
)

log = logging.getLogger(__name__)

_READ_FRAMES = 50  # frames one read may take (a second's worth after a stall)
# How often a relay waiting on a relayed call looks again on its own (the tap pump wakes it
# when a leg ends or a phone moves its media).
_RELAYED_WAIT_S = 2.0


@dataclass
class BridgeResult:
    ended_by: Side | None = None  # the side that hung up first; None: ended by us
    talk_s: float = 0.0
    hold_s: float = 0.0
    recording: Path | None = None
    keys: list[tuple[Side, str]] = field(default_factory=list)  # keys passed on, by presser
    dropped_ms: dict[Side, int] = field(
        default_factory=lambda: {Side.CALLER: 0, Side.AGENT: 0}
    )  # audio dropped to keep the delay bounded, by the side that said it
    # Times the other leg ran dry and a cushion went ahead (the first is the start).
    underruns: dict[Side, int] = field(default_factory=lambda: {Side.CALLER: 0, Side.AGENT: 0})
    transfers: list[Transfer] = field(default_factory=list)  # every attempt, in order
    # The agent left during a transfer that then failed: the bridge ended but the caller is
    # still on the line (on hold audio) — the queue flow queues them again, not hangs up.
    caller_kept: bool = False
    three_way_s: float = 0.0  # time with a third party in the call
    mix_dropped_ms: int = 0  # mixed audio dropped to keep the delay bound (three-way, monitors)
    monitored_by: list[str] = field(default_factory=list)  # supervisors' URIs, as they joined
    # The side whose phone went silent past the media timeout, ending the call; None: not so.
    media_timeout: Side | None = None


def _ignore(side: Side, pcm: bytes) -> None:
    return None


def _no_transfer_hook(call: Call, from_leg: Call, to_leg: Call, kind: TransferKind) -> None:
    return None


TransferHook = Callable[[Call, Call, Call, TransferKind], None]
"""``on_transfer(caller, from_leg, to_leg, kind)``: the agent's leg was replaced (the call
record counts transfers)."""


class Bridge:
    """Relays ``caller`` and ``agent`` until either hangs up (or ``stop``)."""

    def __init__(
        self,
        caller: Call,
        agent: Call,
        *,
        recording_dir: Path | None,
        hold_audio: bytes = b"",
        on_audio: Callable[[Side, bytes], None] = _ignore,
        cushion_ms: int = 120,
        max_queued_ms: int = 360,
        read_timeout_s: float = 0.2,
        dial: Dial | None = None,
        on_transfer: TransferHook = _no_transfer_hook,
        refer_target: Callable[[str], str | None] = str,
        refer_ring_timeout: float = 20.0,
        mix_skew_ms: int = 400,
        relay: RtpengineRelay | None = None,
        rtp_timeout_s: float | None = None,
    ) -> None:
        self.legs = {Side.CALLER: caller, Side.AGENT: agent}
        # A leg silent this long ends the call (``telephony.media_timeout``); by default the
        # edge's setting, which its calls carry (0, never, for calls that carry none).
        if rtp_timeout_s is None:
            rtp_timeout_s = float(getattr(caller, "rtp_timeout_s", 0.0))
        self._watch = MediaWatch(rtp_timeout_s)
        # rtpengine carries the phones' audio while ``_relayed`` is set; the relays then
        # read its taps (``telephony.media_relay``).
        self.relay = relay
        self._relayed: RelayedCall | None = None
        self._give_back_lock = threading.Lock()
        self.dial = dial
        self.on_transfer = on_transfer
        self._transfer: Transfer | None = None  # the attempt under way
        self._consult_thread: threading.Thread | None = None
        self._third: Call | None = None  # a three-way call's third party
        self._third_since = 0.0
        self._mixers: dict[str, Mixer] = {}  # by who hears the mix (three-way, monitors)
        self._monitors: list[Call] = []
        # A REFER from the agent's phone: its Refer-To → the URI to dial (a seat's
        # extension → where that seat is registered; None declines).
        self.refer_target = refer_target
        self.refer_ring_timeout = refer_ring_timeout
        # How far one leg's reader may run ahead of another's before the mix takes the
        # late one as silent: readers hand over ~100 ms chunks at their own wake-ups, so a
        # bound near that would pad (and shift) a leg that is merely read later.
        self.mix_skew_ms = mix_skew_ms
        self._listen_for_refer(agent)
        self.on_audio = on_audio
        self.max_queued_ms = max_queued_ms
        self._cushion = bytes(cushion_ms // FRAME_MS * FRAME_BYTES)
        self.read_timeout_s = read_timeout_s
        self.result = BridgeResult()
        self.ended = threading.Event()
        self._hold_audio = hold_audio or bytes(FRAME_BYTES * 50)
        self._hold_at = 0  # where the hold audio loops on from
        self._held_since: float | None = None
        self._phone_held = False  # the agent's phone holds (as last seen)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started_at = 0.0
        self._recorder: StereoRecorder | None = None
        if recording_dir is not None:
            try:
                self._recorder = StereoRecorder(
                    recording_path(recording_dir, caller.call_id, "-bridge")
                )
            except OSError:
                # A full or unwritable disk must not cost the caller their operator.
                log.exception("bridge of %s: no recording", caller.call_id)
        self.result.recording = self._recorder.path if self._recorder else None

    # --- running ---------------------------------------------------------------------
    def start(self) -> None:
        if self.relay is not None:
            self._relayed = self.relay.take(self.legs[Side.CALLER], self.legs[Side.AGENT])
            if self._relayed is not None:
                self._relayed.start(self._tapped)
        self._started_at = time.monotonic()
        for side in (Side.CALLER, Side.AGENT):
            thread = threading.Thread(
                target=self._relay, args=(side,), name=f"bridge-{side.value}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """True once both relays have ended (and the recording is closed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
            if thread.is_alive():
                return False
        self._close()
        return True

    def stop(self) -> None:
        """End the call from our side: both legs are hung up."""
        self.ended.set()
        self._abandon_transfer()
        for leg in self.legs.values():
            leg.hangup()

    @property
    def held(self) -> bool:
        return self._held_since is not None

    def hold(self) -> None:
        """The agent puts the caller on hold: hold audio to the caller, nothing to the agent
        (on rtpengine, rtpengine plays it; if it cannot, the media comes back here)."""
        relayed = self._relayed
        if relayed is not None and self._held_since is None and relayed.hold(self._hold_audio):
            with self._lock:
                self._held_since = time.monotonic()
            return
        if not self._media_here():
            log.error("bridge of %s: not held: the media stays on rtpengine", self._name)
            return
        with self._lock:
            if self._held_since is None:
                self._held_since = time.monotonic()
                self.legs[Side.AGENT].clear_audio()

    def unhold(self) -> None:
        with self._lock:
            if self._held_since is not None:
                self.result.hold_s += time.monotonic() - self._held_since
                self._held_since = None
                self.legs[Side.CALLER].clear_audio()
        relayed = self._relayed
        if relayed is not None:
            relayed.unhold()

    # --- the relays --------------------------------------------------------------------
    @property
    def _name(self) -> str:
        return self.legs[Side.CALLER].call_id

    def _media_here(self) -> bool:
        """Bring the phones' media back from rtpengine to the edge (what hold, transfers and
        three-way need); False when a phone refused and it stays there."""
        with self._give_back_lock:
            relayed = self._relayed
            if relayed is None:
                return True
            if not relayed.give_back():
                return False
            self._relayed = None
            relayed.wake()  # the relays read the legs themselves from now on
            return True

    def _read(self, leg: Call) -> bytes | None:
        relayed = self._relayed
        side = None if relayed is None else relayed.side_of(leg)
        while relayed is not None and side is not None:
            # rtpengine carries the audio and the tap pump hands it to ``_tapped``: this
            # relay only waits for its leg to end or the media to come back to the edge.
            if relayed.any_moved() and not self._media_here():
                log.error("bridge of %s: media split between edge and rtpengine", self._name)
                self.stop()
            if self._relayed is not relayed:
                break  # given back: the leg itself from now on
            if not relayed.wait(side, _RELAYED_WAIT_S):
                return None
            if self._tap_quiet(relayed, side):
                self._time_out(side)
                return None
        reader = getattr(leg, "read_frames", None)
        if reader is None:
            return leg.read_frame(self.read_timeout_s)
        chunk: bytes | None = reader(self.read_timeout_s, _READ_FRAMES)
        return chunk

    def _relay(self, side: Side) -> None:
        other_side = Side.AGENT if side is Side.CALLER else Side.CALLER
        silence_ms = round(self.read_timeout_s * 1000 / FRAME_MS) * FRAME_MS
        keep_caller = False
        last = self.legs[side]
        try:
            while not self.ended.is_set():
                leg = self.legs[side]  # a transfer may have replaced the agent's leg
                if leg is not last:
                    self._wait_for_other_reader()
                    last = leg
                pcm = self._read(leg)
                if pcm is not None and self._silent_too_long(side, leg):
                    self._time_out(side)
                    pcm = None
                if pcm is None:
                    if self.legs[side] is not leg:
                        continue  # the leg was replaced and hung up: read the new one
                    if side is Side.AGENT and self._agent_left(leg):
                        continue  # a transfer took over: read the leg it put in
                    if side is Side.AGENT and self._third_takes_over(leg):
                        continue  # three-way: the third party stays with the caller
                    with self._lock:
                        if self.result.ended_by is None and not self.ended.is_set():
                            self.result.ended_by = side
                        keep_caller = side is Side.AGENT and self.result.caller_kept
                    log.info("bridge of %s: the %s hung up", self.legs[Side.CALLER].call_id, side)
                    break
                three_way = self._third is not None
                if not pcm:  # nothing came: the time still passed, for the file and the ASR
                    pcm = bytes(silence_ms * FRAME_BYTES // FRAME_MS)
                    if not (three_way and side is Side.AGENT):
                        self._record(side, pcm)
                elif three_way:  # the mixers pass it on (the agent's side recorded mixed)
                    if side is Side.CALLER:
                        self._record(side, pcm)
                else:
                    self._record(side, pcm)
                    self._pass_on(side, other_side, self.legs[other_side], pcm)
                self._to_mixers(side.value, pcm)
                if side is Side.AGENT:
                    self._follow_agent_hold(leg)
                    if self.held:
                        self._feed_hold_audio()
                other = self._hears(side)
                while (key := leg.read_dtmf(0)) is not None:
                    sent = getattr(other, "send_dtmf", None)
                    if sent is not None and sent(key):
                        self.result.keys.append((side, key))
                    else:
                        log.info("bridge: key %s from the %s not passed on", key, side.value)
        except Exception:
            log.exception("bridge relay from the %s failed", side.value)
        finally:
            self.ended.set()
            self._abandon_transfer()
            # Either side's end is the end of both; after a media timeout ``_time_out`` hangs
            # both up itself, each recorded as the timeout's (not as a plain hang-up).
            if not keep_caller and self.result.media_timeout is None:
                self.legs[other_side].hangup()
            for extra in [self._third, *self._monitors]:
                if extra is not None:
                    extra.hangup()

    def _tap_quiet(self, relayed: RelayedCall, side: Side) -> bool:
        """rtpengine mode: ``side``'s tap carried nothing for the media timeout, and
        rtpengine, asked, heard nothing from the phone either."""
        key = ("tap", side)
        expected = not relayed.holding  # held on rtpengine: its taps are blocked too
        if not self._watch.quiet(
            key, relayed.packets_in(side), time.monotonic(), expected=expected
        ):
            return False
        if relayed.still_heard(side, self._watch.timeout_s):
            log.warning(
                "bridge of %s: rtpengine hears the %s but its copies do not reach the edge "
                "(a firewall on the edge's RTP ports?): the recording and transcript miss them",
                self._name,
                side.value,
            )
            self._watch.forget(key)
            return False
        return True

    def _silent_too_long(self, side: Side, leg: Call) -> bool:
        """The edge's own relay: ``leg``'s phone sent nothing for the media timeout."""
        count = getattr(leg, "packets_in", None)
        expected = expects_media(leg) and not (side is Side.AGENT and self._phone_held)
        return self._watch.quiet(id(leg), count, time.monotonic(), expected=expected)

    def _time_out(self, side: Side) -> None:
        """``side``'s phone went silent (gone without a BYE): both legs get our BYE, each
        recorded as ended by the media timeout."""
        with self._lock:
            if self.ended.is_set():
                return
            self.ended.set()
            self.result.media_timeout = side
        log.warning(
            "bridge of %s: no RTP from the %s for %.0f s: both legs hung up (media timeout)",
            self._name,
            side.value,
            self._watch.timeout_s,
        )
        self._abandon_transfer()
        for leg in self.legs.values():
            getattr(leg, "hangup_media_timeout", leg.hangup)()

    def _wait_for_other_reader(self) -> None:
        """The consultation's (or three-way's) reader of the leg that just became the
        agent's hands on its last read and stops; reading alongside it would reorder audio."""
        reader = self._consult_thread
        if reader is not None and reader is not threading.current_thread():
            reader.join(self.read_timeout_s + 1.0)

    def _hears(self, side: Side) -> Call:
        """Who hears ``side`` now: the other side, or the consulted target (attended)."""
        transfer = self._transfer
        if (
            side is Side.AGENT
            and transfer is not None
            and transfer.state is TransferState.CONSULTING
        ):
            assert transfer.leg is not None
            return transfer.leg
        return self.legs[Side.CALLER if side is Side.AGENT else Side.AGENT]

    def _tapped(self, side: Side, pcm: bytes) -> None:
        """What ``side`` said, from rtpengine's tap (the tap pump's thread): recorded and
        mixed for any monitoring supervisor as the relay does with a leg's audio."""
        self._record(side, pcm)
        self._to_mixers(side.value, pcm)

    def _record(self, side: Side, pcm: bytes) -> None:
        if self._recorder is not None:
            self._recorder.write(side, pcm)
        try:
            self.on_audio(side, pcm)
        except Exception:
            log.exception("bridge on_audio failed")

    def _pass_on(self, side: Side, other_side: Side, other: Call, pcm: bytes) -> None:
        if self._relayed is not None:
            return  # rtpengine carries it; this was the tap's copy
        if self.held:
            transfer = self._transfer
            if side is Side.AGENT and transfer is not None and transfer.leg is not None:
                if transfer.state is TransferState.CONSULTING:
                    self._send_bounded(side, transfer.leg, pcm)  # the agent consults
            return  # nobody hears the other side while the caller is held
        self._send_bounded(side, other, pcm)

    def _send_bounded(
        self, side: Side | None, other: Call, pcm: bytes, *, bound_ms: int | None = None
    ) -> None:
        """Queue ``pcm`` to ``other`` within the delay bound (``side``: whose audio it is,
        for the counts; None for mixes, which come in bigger bursts — a mix waits for its
        latest leg — and get ``bound_ms``)."""
        queued = getattr(other, "queued_ms", None)
        if queued is not None and queued > (bound_ms or self.max_queued_ms):
            other.clear_audio()
            if side is not None:
                self.result.dropped_ms[side] += int(queued)
            else:
                self.result.mix_dropped_ms += int(queued)
            log.info("bridge: %d ms of audio to %s dropped (delay bound)", queued, other.call_id)
        elif queued == 0 and self._cushion:
            if side is not None:
                self.result.underruns[side] += 1
            other.send_audio(self._cushion)
        other.send_audio(pcm)

    def _to_mixers(self, source: str, pcm: bytes) -> None:
        for mixer in list(self._mixers.values()):
            mixer.push(source, pcm)

    def _follow_agent_hold(self, agent: Call) -> None:
        """The agent's phone put the call on hold (its hold key sends a re-INVITE with
        a=sendonly or a=inactive: ``SipCall.held_by_peer``) or took it off."""
        held = getattr(agent, "held_by_peer", None)
        if held is None or held == self._phone_held:
            return
        self._phone_held = held
        if held:
            self.hold()
        else:
            self.unhold()

    def _feed_hold_audio(self) -> None:
        """Keep about half a second of hold audio queued to the caller, looping."""
        caller = self.legs[Side.CALLER]
        if getattr(caller, "queued_ms", 0) >= 300:
            return
        audio, size = self._hold_audio, 25 * FRAME_BYTES
        chunk = bytearray()
        while len(chunk) < size:  # the audio may be shorter than a chunk: it loops
            piece = audio[self._hold_at : self._hold_at + size - len(chunk)]
            chunk += piece
            self._hold_at = (self._hold_at + len(piece)) % len(audio)
        caller.send_audio(bytes(chunk))

    # --- transfers ---------------------------------------------------------------------
    def transfer(self, target_uri: str, *, ring_timeout: float = 20.0) -> Transfer:
        """Blind transfer: ring ``target_uri`` (another seat, a supervisor, a department's
        number) while the caller hears hold audio; on the answer the caller talks to the
        target and the agent's leg is hung up; on busy / no answer / cancel the caller is
        back with the agent. Returns at once; ``Transfer.wait`` for the outcome."""
        return self._start_transfer(TransferKind.BLIND, target_uri, ring_timeout)

    def consult(self, target_uri: str, *, ring_timeout: float = 20.0) -> Transfer:
        """Attended transfer: the caller is held while the agent talks to the target on a
        consultation leg; then ``complete_transfer`` (the caller to the target, the agent
        leaves — also what the agent's hanging up means) or ``cancel_transfer`` (back to
        the caller, the consultation leg hung up)."""
        return self._start_transfer(TransferKind.ATTENDED, target_uri, ring_timeout)

    def complete_transfer(self) -> bool:
        """Hand the caller to the consulted target; False when no consultation is up."""
        transfer = self._transfer
        if transfer is None or transfer.state is not TransferState.CONSULTING:
            return False
        return self._hand_over(transfer)

    def cancel_transfer(self) -> bool:
        """The agent returns to the caller: a ringing target is CANCELled, a consulted one
        hung up. False when no transfer is under way."""
        transfer = self._transfer
        if transfer is None or transfer.done.is_set():
            return False
        transfer.cancel.set()
        if transfer.state is TransferState.CONSULTING:
            self._fail(transfer, TransferOutcome.CANCELLED, Disposition.CANCELLED)
        return True

    def _start_transfer(
        self,
        kind: TransferKind,
        target_uri: str,
        ring_timeout: float,
        *,
        report: Callable[[int, str], None] | None = None,
    ) -> Transfer:
        if self.dial is None:
            raise TransferRefused("this bridge has no way to dial (no dial given)")
        if not self._media_here():
            raise TransferRefused("the media could not come back from rtpengine")
        with self._lock:
            if self.ended.is_set():
                raise TransferRefused("the call has ended")
            if self._transfer is not None:
                raise TransferRefused("a transfer is already under way")
            transfer = Transfer(
                kind=kind, target_uri=target_uri, from_leg=self.legs[Side.AGENT], report=report
            )
            self._transfer = transfer
            self.result.transfers.append(transfer)
        self.hold()
        threading.Thread(
            target=self._ring_target,
            args=(transfer, ring_timeout),
            name=f"bridge-transfer-{kind.value}",
            daemon=True,
        ).start()
        return transfer

    def _ring_target(self, transfer: Transfer, ring_timeout: float) -> None:
        assert self.dial is not None
        try:
            leg = self.dial(transfer.target_uri, ring_timeout=ring_timeout, cancel=transfer.cancel)
        except CallFailed as exc:
            transfer.rang_s = time.monotonic() - transfer.started
            outcome = (
                TransferOutcome.CANCELLED
                if exc.disposition is Disposition.CANCELLED
                else TransferOutcome.FAILED
            )
            self._fail(transfer, outcome, exc.disposition)
            return
        except Exception:
            log.exception("bridge: dialling %s for a transfer failed", transfer.target_uri)
            self._fail(transfer, TransferOutcome.FAILED, Disposition.FAILED)
            return
        transfer.rang_s = time.monotonic() - transfer.started
        with self._lock:
            gone = self.ended.is_set() or transfer.cancel.is_set()
            if not gone:
                transfer.leg = leg
        if gone:  # the caller left (or the agent cancelled) as the target answered
            leg.hangup()
            self._fail(transfer, TransferOutcome.CANCELLED, Disposition.CANCELLED)
            return
        if transfer.kind is TransferKind.BLIND or transfer.from_leg.ended.is_set():
            self._hand_over(transfer)
            return
        transfer.state = TransferState.CONSULTING
        self._consult_thread = threading.Thread(
            target=self._consult_relay, args=(transfer, leg), name="bridge-consult", daemon=True
        )
        self._consult_thread.start()

    def _consult_relay(self, transfer: Transfer, leg: Call) -> None:
        """The consulted target's audio to the agent, until the consultation ends (the
        agent's own audio goes the other way in the agent's relay, ``_pass_on``)."""
        agent = transfer.from_leg
        while transfer.state is TransferState.CONSULTING and not self.ended.is_set():
            pcm = self._read(leg)
            if transfer.state is not TransferState.CONSULTING:
                if self._third is leg:  # merged: this thread goes on as the third's relay
                    if pcm:
                        self._to_mixers("third", pcm)
                    self._third_relay(leg)
                    return
                if pcm:  # read just as the hand-over happened: it is the caller's now
                    self._record(Side.AGENT, pcm)
                    self._send_bounded(Side.AGENT, self.legs[Side.CALLER], pcm)
                return
            if pcm is None:  # the target hung up: the agent is back with the caller
                self._fail(transfer, TransferOutcome.FAILED, Disposition.CALLER_HUNG_UP)
                return
            if pcm:
                self._send_bounded(Side.CALLER, agent, pcm)

    def _hand_over(self, transfer: Transfer) -> bool:
        """The target takes the agent's place on the caller's side of the relay."""
        with self._lock:
            if transfer.done.is_set() or transfer.leg is None or self.ended.is_set():
                return False
            old = self.legs[Side.AGENT]
            self.legs[Side.AGENT] = transfer.leg
            self._phone_held = False
            transfer.state = TransferState.DONE
            transfer.outcome = TransferOutcome.COMPLETED
            self._transfer = None
        self._report(transfer)  # the phone that asked hears 200 before its BYE
        self._listen_for_refer(transfer.leg)
        old.hangup()
        self.unhold()
        transfer.done.set()
        log.info(
            "bridge of %s: %s transfer to %s",
            self.legs[Side.CALLER].call_id,
            transfer.kind.value,
            transfer.target_uri,
        )
        try:
            self.on_transfer(self.legs[Side.CALLER], old, transfer.leg, transfer.kind)
        except Exception:
            log.exception("bridge on_transfer failed")
        return True

    def _fail(self, transfer: Transfer, outcome: TransferOutcome, why: Disposition) -> None:
        """The transfer did not happen: the caller is back with the agent, or — when the
        agent left meanwhile — the bridge ends with the caller kept for the queue flow."""
        with self._lock:
            if transfer.done.is_set():
                return
            transfer.state = TransferState.DONE
            transfer.outcome = outcome
            transfer.disposition = why
            self._transfer = None
            agent_gone = (
                transfer.from_leg.ended.is_set() and self.legs[Side.AGENT] is transfer.from_leg
            )
            if agent_gone and not self.ended.is_set():
                self.result.caller_kept = True
        if transfer.leg is not None:
            transfer.leg.hangup()
        self._report(transfer)
        if not agent_gone:
            self.unhold()
        transfer.done.set()
        log.info(
            "bridge: %s transfer to %s %s (%s)",
            transfer.kind.value,
            transfer.target_uri,
            outcome.value,
            why.value,
        )

    def _report(self, transfer: Transfer) -> None:
        if transfer.report is None or transfer.outcome is None:
            return
        try:
            transfer.report(*sip_status(transfer.outcome, transfer.disposition))
        except Exception:
            log.exception("bridge: reporting a transfer's outcome failed")

    def _listen_for_refer(self, leg: Call) -> None:
        """The agent's phone may transfer with its own key (a REFER, ``SipCall.on_refer``)."""
        if hasattr(leg, "on_refer"):
            leg.on_refer = functools.partial(self._on_refer, leg)

    def _on_refer(self, leg: Call, refer: Refer) -> bool:
        """A REFER from ``leg``'s phone (on the SIP receive thread: it only starts the
        transfer). Blind: as ``transfer``. With Replaces — the phone consulted the target
        on a call of its own — declined: that call is not relayed here to be joined."""
        if leg is not self.legs[Side.AGENT] or refer.replaces:
            log.info("bridge: REFER from %s declined (replaces=%r)", leg.call_id, refer.replaces)
            return False
        uri = self.refer_target(refer.target)
        if uri is None:
            return False
        if self._relayed is not None:  # the media comes back by re-INVITE: not on this thread
            threading.Thread(
                target=self._refer_off_thread, args=(uri, refer), name="bridge-refer", daemon=True
            ).start()
            return True
        try:
            transfer = self._start_transfer(
                TransferKind.BLIND, uri, self.refer_ring_timeout, report=refer.notify
            )
        except TransferRefused as exc:
            log.info("bridge: REFER from %s declined: %s", leg.call_id, exc)
            return False
        return transfer is not None

    def _refer_off_thread(self, uri: str, refer: Refer) -> None:
        try:
            self._start_transfer(
                TransferKind.BLIND, uri, self.refer_ring_timeout, report=refer.notify
            )
        except TransferRefused as exc:
            log.info("bridge of %s: REFER declined: %s", self._name, exc)
            refer.notify(603, "Declined")

    def _agent_left(self, leg: Call) -> bool:
        """The agent's leg ended while a transfer was under way: a consultation completes
        (as PBXs do), a ringing target keeps ringing with the caller on hold audio. True
        when a new leg took over; False when the bridge should end (``caller_kept`` then
        says whether the caller stays on the line)."""
        transfer = self._transfer
        if transfer is None or transfer.from_leg is not leg:
            return False
        if transfer.state is TransferState.CONSULTING:
            return self._hand_over(transfer)
        while not transfer.done.wait(0.1) and not self.ended.is_set():
            self._feed_hold_audio()  # the caller waits for the target on hold audio
        return self.legs[Side.AGENT] is not leg

    def _abandon_transfer(self) -> None:
        """The bridge is ending: a ringing target is CANCELled, a consulted one hung up."""
        transfer = self._transfer
        if transfer is None:
            return
        transfer.cancel.set()
        if transfer.state is TransferState.CONSULTING:
            self._fail(transfer, TransferOutcome.CANCELLED, Disposition.CANCELLED)

    # --- three-way calls and monitoring ---------------------------------------------------
    def merge(self) -> bool:
        """The consulted party joins the caller and the agent (三方通话): each hears the other
        two. False when no consultation is up."""
        transfer = self._transfer
        if transfer is None or transfer.state is not TransferState.CONSULTING:
            return False
        with self._lock:
            if transfer.done.is_set() or self.ended.is_set() or transfer.leg is None:
                return False
            third = transfer.leg
            caller, agent = self.legs[Side.CALLER], self.legs[Side.AGENT]
            self._mixers.update(
                caller=self._mixer(("agent", "third"), caller),
                agent=self._mixer(("caller", "third"), agent),
                third=self._mixer(("caller", "agent"), third),
                recording=Mixer(
                    ("agent", "third"),
                    lambda pcm: self._record(Side.AGENT, pcm),
                    max_skew_ms=self.mix_skew_ms,
                ),
            )
            for name, mixer in self._mixers.items():
                if name.startswith("monitor"):
                    mixer.add("third")
            self._third = third
            self._third_since = time.monotonic()
            transfer.state = TransferState.DONE
            transfer.outcome = TransferOutcome.MERGED
            self._transfer = None
        self.unhold()
        transfer.done.set()
        log.info("bridge of %s: three-way with %s", caller.call_id, transfer.target_uri)
        return True

    def _mixer(self, sources: Iterable[str], to: Call) -> Mixer:
        """A mix for ``to``; its delay bound leaves room for the skew it may wait out."""
        bound = self.max_queued_ms + self.mix_skew_ms
        return Mixer(
            sources,
            lambda pcm: self._send_bounded(None, to, pcm, bound_ms=bound),
            max_skew_ms=self.mix_skew_ms,
        )

    def _third_relay(self, leg: Call) -> None:
        """The third party's audio into the mixes, until it or the call leaves."""
        silence = bytes(round(self.read_timeout_s * 1000 / FRAME_MS) * FRAME_BYTES)
        while self._third is leg and not self.ended.is_set():
            pcm = self._read(leg)
            if pcm is None:
                self._end_three_way(leg, stays=self.legs[Side.AGENT])
                return
            if self._third is not leg:
                if pcm and self.legs[Side.AGENT] is leg:  # the agent left as it was read:
                    self._record(Side.AGENT, pcm)  # it is the caller's, before what follows
                    self._send_bounded(Side.AGENT, self.legs[Side.CALLER], pcm)
                return
            self._to_mixers("third", pcm or silence)
            while (key := leg.read_dtmf(0)) is not None:  # a department's menu: to the caller
                sent = getattr(self.legs[Side.CALLER], "send_dtmf", None)
                if sent is not None:
                    sent(key)

    def _end_three_way(self, third: Call, *, stays: Call) -> None:
        """Back to two parties, the caller and ``stays`` (the agent, or the third party
        when the agent left)."""
        with self._lock:
            if self._third is not third:
                return
            if stays is third and self.ended.is_set():
                return  # the caller left: everyone is being hung up, nobody takes over
            self._third = None
            self.result.three_way_s += time.monotonic() - self._third_since
            for name in ("caller", "agent", "third", "recording"):
                self._mixers.pop(name, None)
            for mixer in self._mixers.values():
                mixer.remove("third")
            old = self.legs[Side.AGENT]
            self.legs[Side.AGENT] = stays
        if stays is not old:
            self._listen_for_refer(stays)
            log.info("bridge of %s: the agent left the three-way", self.legs[Side.CALLER].call_id)
            try:
                self.on_transfer(self.legs[Side.CALLER], old, stays, TransferKind.THREE_WAY)
            except Exception:
                log.exception("bridge on_transfer failed")

    def _third_takes_over(self, leg: Call) -> bool:
        third = self._third
        if third is None or third.ended.is_set() or self.legs[Side.AGENT] is not leg:
            return False
        if self.ended.is_set() or self.legs[Side.CALLER].ended.is_set():
            return False
        self._end_three_way(third, stays=third)
        return True

    @property
    def three_way(self) -> bool:
        return self._third is not None

    def monitor(self, leg: Call, *, name: str = "") -> None:
        """A supervisor's answered leg hears the call (everyone mixed) and is heard by
        nobody, until it hangs up or the call ends."""
        with self._lock:
            if self.ended.is_set():
                leg.hangup()
                return
            sources = ["caller", "agent"] + (["third"] if self._third is not None else [])
            key = f"monitor-{len(self.result.monitored_by)}"
            self._mixers[key] = self._mixer(sources, leg)
            self._monitors.append(leg)
            self.result.monitored_by.append(name or leg.remote_uri)
        threading.Thread(
            target=self._monitor_relay, args=(key, leg), name="bridge-monitor", daemon=True
        ).start()

    def _monitor_relay(self, key: str, leg: Call) -> None:
        """Reads the supervisor's leg only to drop what it says and see it hang up."""
        while not self.ended.is_set():
            if self._read(leg) is None:
                break
            while leg.read_dtmf(0) is not None:
                pass  # a supervisor's keys reach nobody either
        with self._lock:
            self._mixers.pop(key, None)
            if leg in self._monitors:
                self._monitors.remove(leg)

    def _close(self) -> None:
        with self._lock:
            if self._held_since is not None:
                self.result.hold_s += time.monotonic() - self._held_since
                self._held_since = None
            if self._started_at and not self.result.talk_s:
                self.result.talk_s = time.monotonic() - self._started_at
        relayed = self._relayed
        if relayed is not None:
            relayed.end()  # the taps' last audio into the recording before it closes
        if self._recorder is not None:
            self._recorder.close()


def bridge_calls(
    caller: Call,
    agent: Call,
    *,
    recording_dir: Path | None,
    hold_audio: bytes = b"",
    on_audio: Callable[[Side, bytes], None] = _ignore,
) -> BridgeResult:
    """Bridge the two legs until either hangs up; blocks the calling (the caller's handler)
    thread meanwhile."""
    bridge = Bridge(
        caller, agent, recording_dir=recording_dir, hold_audio=hold_audio, on_audio=on_audio
    )
    bridge.start()
    bridge.wait()
    return bridge.result
