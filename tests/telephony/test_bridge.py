"""The bridge's relay on calls fed in real time: both ways, keys through, hold, either
side's hang-up, the stereo file and its crash safety, and the per-side audio hook."""

from __future__ import annotations

import shutil
import time
import wave

import numpy as np
import pytest

from telephony.bridge import Bridge
from telephony.endpoint import FRAME_BYTES
from telephony.recording import Side, repair_wav
from telephony.sip_dialogs import offer_direction
from tests.conftest import wait_until
from tests.telephony.fakes import PipeCall
from tests.telephony.sip_peers import tone


def _channels(path) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    return samples[0::2], samples[1::2]


def _bridge(tmp_path, *, start: bool = True, **kwargs):
    caller, agent = PipeCall("caller-1"), PipeCall("agent-1", remote_number="8001")
    heard: list[tuple[Side, int]] = []
    bridge = Bridge(
        caller,
        agent,
        recording_dir=tmp_path,
        on_audio=lambda side, pcm: heard.append((side, len(pcm))),
        read_timeout_s=0.05,
        **kwargs,
    )
    if start:
        bridge.start()
    return bridge, caller, agent, heard


def test_given_a_bridge_then_audio_goes_both_ways_and_the_stereo_file_keeps_each_side(tmp_path):
    bridge, caller, agent, heard = _bridge(tmp_path, start=False)
    said_by_caller, said_by_agent = tone(400, 0.4), tone(1000, 0.4)
    caller.feed(said_by_caller)  # before the relays start: no read times out first
    agent.feed(said_by_agent)
    bridge.start()
    wait_until(lambda: len(agent.sent) >= len(said_by_caller), 5, message="relayed to agent")
    wait_until(lambda: len(caller.sent) >= len(said_by_agent), 5, message="relayed to caller")
    assert bytes(agent.sent) == said_by_caller and bytes(caller.sent) == said_by_agent
    caller.far_end_hangs_up()
    assert bridge.wait(5)
    assert agent.ended.is_set() and bridge.result.ended_by is Side.CALLER
    left, right = _channels(bridge.result.recording)
    assert len(left) == len(right) >= 3200
    assert np.array_equal(left[:3200], np.frombuffer(said_by_caller, "<i2"))
    assert np.array_equal(right[:3200], np.frombuffer(said_by_agent, "<i2"))
    assert sum(n for side, n in heard if side is Side.CALLER) >= len(said_by_caller)
    assert sum(n for side, n in heard if side is Side.AGENT) >= len(said_by_agent)


def test_given_the_other_leg_ran_dry_then_a_cushion_goes_first_and_a_backlog_is_dropped(
    tmp_path,
):
    bridge, caller, agent, _ = _bridge(tmp_path, cushion_ms=40, max_queued_ms=300)
    agent.queued_ms = 0  # dry: the far end would hear a gap before the next chunk
    caller.feed(tone(400, 0.1))
    wait_until(lambda: len(agent.sent) >= 2 * FRAME_BYTES + 800 * 2, 5, message="relayed")
    assert bytes(agent.sent[: 2 * FRAME_BYTES]) == bytes(2 * FRAME_BYTES)
    assert bridge.result.underruns[Side.CALLER] >= 1
    agent.queued_ms = 900  # a burst after a stall: played late for the rest of the call
    before = agent.cleared
    caller.feed(tone(400, 0.1))
    wait_until(lambda: agent.cleared > before, 5, message="backlog dropped")
    assert bridge.result.dropped_ms[Side.CALLER] >= 900
    bridge.stop()
    assert bridge.wait(5)


def test_given_an_unwritable_recording_dir_then_the_call_is_bridged_unrecorded(tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the directory should be")
    bridge, caller, agent, _ = _bridge(blocked)
    caller.feed(tone(400, 0.2))
    wait_until(lambda: len(agent.sent) >= 3200, 5, message="relayed")
    caller.far_end_hangs_up()
    assert bridge.wait(5) and bridge.result.recording is None


def test_given_the_agent_hangs_up_then_the_caller_is_hung_up_too(tmp_path):
    bridge, caller, agent, _ = _bridge(tmp_path)
    agent.far_end_hangs_up()
    assert bridge.wait(5)
    assert caller.ended.is_set() and bridge.result.ended_by is Side.AGENT


def test_given_keys_then_each_side_s_keys_reach_the_other(tmp_path):
    bridge, caller, agent, _ = _bridge(tmp_path)
    caller.press("5")
    agent.press("#")
    wait_until(lambda: agent.keys_sent == ["5"] and caller.keys_sent == ["#"], 5, message="keys")
    caller.takes_keys = False  # a peer whose SDP had no telephone-event
    agent.press("1")
    wait_until(lambda: agent._keys.empty(), 5)
    bridge.stop()
    assert bridge.wait(5)
    assert sorted(bridge.result.keys) == [(Side.AGENT, "#"), (Side.CALLER, "5")]
    assert bridge.result.ended_by is None  # ended by us


def test_given_hold_then_the_caller_hears_hold_audio_and_the_agent_nothing_until_unhold(
    tmp_path,
):
    music = tone(523, 0.1, 2000)  # shorter than what is queued at a time: it loops
    bridge, caller, agent, _ = _bridge(tmp_path, hold_audio=music)
    bridge.hold()
    caller.feed(tone(400, 0.2))
    agent.feed(tone(1000, 0.2))
    wait_until(lambda: len(caller.sent) >= 25 * FRAME_BYTES, 5, message="hold audio")
    assert bytes(caller.sent[: 25 * FRAME_BYTES]) == music * 5
    time.sleep(0.2)  # the relays run a few more reads: nothing of the caller reaches the agent
    assert agent.sent == bytearray()
    bridge.unhold()
    caller.feed(tone(400, 0.2))
    wait_until(lambda: len(agent.sent) >= 1600, 5, message="relayed after unhold")
    bridge.stop()
    assert bridge.wait(5)
    assert bridge.result.hold_s > 0.2


def test_given_a_crash_mid_call_then_the_stereo_file_plays_and_repairs(tmp_path):
    bridge, caller, agent, _ = _bridge(tmp_path)
    caller.feed(tone(400, 1.5))
    agent.feed(tone(1000, 1.5))
    path = bridge.result.recording
    wait_until(lambda: path.stat().st_size > 44 + 4 * 8000, 5, message="a second written")
    # What a kill -9 leaves: the file as it is now, never closed.
    left_behind = tmp_path / "crash.wav"
    shutil.copy(path, left_behind)
    with wave.open(str(left_behind)) as wav:  # the header is already (nearly) true
        assert wav.getnchannels() == 2 and wav.getnframes() >= 8000
    duration = repair_wav(left_behind)
    assert duration >= 1.0
    assert left_behind.stat().st_size == 44 + int(duration * 8000) * 4
    bridge.stop()
    assert bridge.wait(5)


@pytest.mark.parametrize(
    ("sdp", "direction"),
    [
        (b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n", "sendonly"),
        (b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\n", "inactive"),
        (b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n", "sendrecv"),
        (b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n", "sendrecv"),
        (b"v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n", "inactive"),  # RFC 2543
        (b"v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/AVP 0\nA=SENDONLY\n", "sendonly"),
    ],
)
def test_a_phone_s_hold_is_read_from_its_offer(sdp, direction):
    assert offer_direction(sdp) == direction
