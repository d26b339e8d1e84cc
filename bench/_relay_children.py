"""bench/relay.py's child processes: the edge's own relay (``--own-child``) and the edge's
taps on rtpengine's relayed calls (``--tap-child``). Each reads one JSON line on stdin,
answers one when ready, works until stdin closes, and may print one JSON line of figures."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, cast

from telephony import codecs

HOST = "127.0.0.1"


def own_child(workdir: Path) -> None:
    """``--own-child``: bridge every pair of peer ports read from stdin, print our ports,
    relay until stdin closes."""
    from telephony.bridge import Bridge
    from telephony.endpoint import Call
    from telephony.rtp_session import RtpSession

    peer_ports = json.loads(sys.stdin.readline())
    recordings = workdir / "recordings"
    recordings.mkdir(exist_ok=True)
    legs: list[_Leg] = []
    for s, port in enumerate(peer_ports):
        session = RtpSession(
            local_host=HOST,
            port=0,
            sock=None,
            remote=(HOST, port),
            payload_type=codecs.PCMU,
            dtmf_payload_type=101,
        )
        legs.append(_Leg(f"bench-{s // 2}-{s % 2}", session))
    bridges = []
    for k in range(len(legs) // 2):
        # _Leg has what the bridge uses of a call, not the SIP dialog's fields the rest read.
        caller, agent = cast(Call, legs[2 * k]), cast(Call, legs[2 * k + 1])
        bridge = Bridge(caller, agent, recording_dir=recordings)
        bridges.append(bridge)
    for leg in legs:
        leg.session.start()
    for bridge in bridges:
        bridge.start()
    print(json.dumps([leg.session.local_address[1] for leg in legs]), flush=True)
    sys.stdin.read()  # until the parent closes it
    for bridge in bridges:
        bridge.stop()
    for bridge in bridges:
        bridge.wait(5)
    shutil.rmtree(recordings, ignore_errors=True)


def tap_child(workdir: Path) -> None:
    """``--tap-child``: the edge's side of relayed bridges — subscribe to both sides of
    every call, record them (stereo WAV) until stdin closes; print what the taps received."""
    from telephony.rtpengine import MediaTap, NgClient

    request = json.loads(sys.stdin.readline())
    # A loaded machine may keep rtpengine's answers a while: wait longer than the edge would.
    ng = NgClient((request["ng"][0], int(request["ng"][1])), timeout=5.0)
    recordings = workdir / "recordings"
    recordings.mkdir(exist_ok=True)
    taps = []
    for k in range(int(request["calls"])):
        tap = MediaTap(host=HOST, recording=recordings / f"bench-{k}.wav")
        tap.subscribe(ng, call_id=f"bench-{k}")
        tap.start()
        taps.append(tap)
    print(json.dumps("ready"), flush=True)
    sys.stdin.read()
    received = sum(s.stats["received"] for tap in taps for s in tap.sessions.values())
    for tap in taps:
        tap.stop()
    shutil.rmtree(recordings, ignore_errors=True)
    print(json.dumps({"tap_packets_received": received}), flush=True)


class _Leg:
    """The part of ``SipCall`` the bridge reads and writes, over a bare ``RtpSession``."""

    def __init__(self, call_id: str, session: Any) -> None:
        self.call_id = call_id
        self.session = session
        self.ended = threading.Event()

    def read_frame(self, timeout: float) -> bytes | None:
        frame: bytes | None = self.session.read_frame(timeout)
        return frame

    def read_frames(self, timeout: float, max_frames: int) -> bytes | None:
        frames: bytes | None = self.session.read_frames(timeout, max_frames)
        return frames

    def send_audio(self, pcm: bytes) -> None:
        self.session.send_audio(pcm)

    def clear_audio(self) -> None:
        self.session.clear_audio()

    @property
    def queued_ms(self) -> int:
        queued: int = self.session.queued_ms
        return queued

    def read_dtmf(self, timeout: float) -> str | None:
        return None

    def send_dtmf(self, key: str) -> bool:
        sent: bool = self.session.send_dtmf(key)
        return sent

    def hangup(self) -> None:
        if not self.ended.is_set():
            self.ended.set()
            self.session.stop()
