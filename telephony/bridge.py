"""The bridge: a caller and an agent talking through the edge (a B2BUA with its own relay).

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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from telephony.endpoint import FRAME_BYTES, FRAME_MS, Call
from telephony.recording import Side, StereoRecorder, recording_path

log = logging.getLogger(__name__)

_READ_FRAMES = 50  # frames one read may take (a second's worth after a stall)


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


def _ignore(side: Side, pcm: bytes) -> None:
    return None


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
    ) -> None:
        self.legs = {Side.CALLER: caller, Side.AGENT: agent}
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
        for leg in self.legs.values():
            leg.hangup()

    @property
    def held(self) -> bool:
        return self._held_since is not None

    def hold(self) -> None:
        """The agent puts the caller on hold: hold audio to the caller, nothing to the agent."""
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

    # --- the relays --------------------------------------------------------------------
    def _read(self, leg: Call) -> bytes | None:
        reader = getattr(leg, "read_frames", None)
        if reader is None:
            return leg.read_frame(self.read_timeout_s)
        chunk: bytes | None = reader(self.read_timeout_s, _READ_FRAMES)
        return chunk

    def _relay(self, side: Side) -> None:
        leg = self.legs[side]
        other_side = Side.AGENT if side is Side.CALLER else Side.CALLER
        other = self.legs[other_side]
        silence_ms = round(self.read_timeout_s * 1000 / FRAME_MS) * FRAME_MS
        try:
            while not self.ended.is_set():
                pcm = self._read(leg)
                if pcm is None:
                    with self._lock:
                        if self.result.ended_by is None and not self.ended.is_set():
                            self.result.ended_by = side
                    log.info("bridge of %s: the %s hung up", self.legs[Side.CALLER].call_id, side)
                    break
                if not pcm:  # nothing came: the time still passed, for the file and the ASR
                    pcm = bytes(silence_ms * FRAME_BYTES // FRAME_MS)
                    self._record(side, pcm)
                else:
                    self._record(side, pcm)
                    self._pass_on(side, other_side, other, pcm)
                if side is Side.AGENT:
                    self._follow_agent_hold(leg)
                    if self.held:
                        self._feed_hold_audio()
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
            other.hangup()  # either side's end is the end of both

    def _record(self, side: Side, pcm: bytes) -> None:
        if self._recorder is not None:
            self._recorder.write(side, pcm)
        try:
            self.on_audio(side, pcm)
        except Exception:
            log.exception("bridge on_audio failed")

    def _pass_on(self, side: Side, other_side: Side, other: Call, pcm: bytes) -> None:
        if self.held:
            return  # nobody hears the other side while the caller is held
        queued = getattr(other, "queued_ms", None)
        if queued is not None and queued > self.max_queued_ms:
            other.clear_audio()
            self.result.dropped_ms[side] += int(queued)
            log.info("bridge: %d ms of the %s's audio dropped (delay bound)", queued, side.value)
        elif queued == 0 and self._cushion:
            self.result.underruns[side] += 1
            other.send_audio(self._cushion)
        other.send_audio(pcm)

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

    def _close(self) -> None:
        with self._lock:
            if self._held_since is not None:
                self.result.hold_s += time.monotonic() - self._held_since
                self._held_since = None
            if self._started_at and not self.result.talk_s:
                self.result.talk_s = time.monotonic() - self._started_at
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
