"""The bridge's transfers on calls fed in real time (``PipeCall``) and a scripted ``dial``:
blind and attended, each way they can end — answered, busy, unanswered, cancelled, the
agent or the caller leaving while the target rings, the target leaving the consultation."""

from __future__ import annotations

import time
import wave

import numpy as np
import pytest

from telephony.bridge import Bridge
from telephony.endpoint import FRAME_BYTES, CallFailed, Disposition
from telephony.recording import Side
from telephony.transfer import TransferKind, TransferOutcome, TransferRefused, TransferState
from tests.conftest import wait_until
from tests.telephony.fakes import FakeDial, PipeCall
from tests.telephony.sip_peers import tone
from tests.telephony.test_transfer_sip import best_lag_correlation, noise

MUSIC = tone(523, 0.1, 2000)


def _bridge(tmp_path, dial: FakeDial | None, read_timeout_s: float = 0.05):
    caller, agent = PipeCall("caller-1"), PipeCall("agent-a", remote_number="8001")
    hooked: list[tuple[str, str, str, TransferKind]] = []
    bridge = Bridge(
        caller,
        agent,
        recording_dir=tmp_path,
        hold_audio=MUSIC,
        read_timeout_s=read_timeout_s,
        dial=dial,
        on_transfer=lambda call, old, new, kind: hooked.append(
            (call.call_id, old.call_id, new.call_id, kind)
        ),
    )
    bridge.start()
    return bridge, caller, agent, hooked


def _heard(call: PipeCall, pcm: bytes) -> bool:
    return bytes(call.sent).find(pcm) >= 0


def test_given_a_blind_transfer_answered_then_the_caller_talks_to_the_target_and_a_leaves(
    tmp_path,
):
    target = PipeCall("agent-b", remote_number="8002")
    dial = FakeDial(target)
    bridge, caller, agent, hooked = _bridge(tmp_path, dial)
    transfer = bridge.transfer("sip:8002@seats", ring_timeout=5)
    wait_until(lambda: _heard(caller, MUSIC * 3), 5, message="hold audio while it rings")
    agent.feed(tone(1000, 0.2))
    time.sleep(0.2)
    assert not _heard(caller, tone(1000, 0.2))  # the caller hears hold audio, not the agent
    dial.answer.set()
    assert transfer.wait(5) is TransferOutcome.COMPLETED
    assert agent.ended.is_set() and not caller.ended.is_set()
    assert bridge.legs[Side.AGENT] is target and not bridge.held
    said_by_b, said_by_caller = tone(700, 0.2), tone(400, 0.2)
    target.feed(said_by_b)
    caller.feed(said_by_caller)
    wait_until(lambda: _heard(caller, said_by_b), 5, message="b heard by the caller")
    wait_until(lambda: _heard(target, said_by_caller), 5, message="the caller heard by b")
    assert hooked == [("caller-1", "agent-a", "agent-b", TransferKind.BLIND)]
    assert dial.dialled == [("sip:8002@seats", 5)]
    target.far_end_hangs_up()
    assert bridge.wait(5) and caller.ended.is_set()
    assert bridge.result.ended_by is Side.AGENT and bridge.result.transfers == [transfer]
    # One file across the transfer: b's voice on the right, the caller's on the left.
    with wave.open(str(bridge.result.recording)) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    assert samples[1::2].tobytes().find(said_by_b) >= 0
    assert samples[0::2].tobytes().find(said_by_caller) >= 0


@pytest.mark.parametrize("disposition", [Disposition.BUSY, Disposition.NO_ANSWER])
def test_given_a_busy_or_unanswered_target_then_the_caller_is_back_with_the_agent(
    tmp_path, disposition
):
    dial = FakeDial(CallFailed(disposition))
    bridge, caller, agent, hooked = _bridge(tmp_path, dial)
    transfer = bridge.transfer("sip:8002@seats", ring_timeout=1)
    assert transfer.wait(5) is TransferOutcome.FAILED and transfer.disposition is disposition
    assert not bridge.held and not agent.ended.is_set()
    agent.feed(tone(1000, 0.2))
    wait_until(lambda: _heard(caller, tone(1000, 0.2)), 5, message="a heard again")
    assert hooked == []
    second = bridge.transfer("sip:8003@seats", ring_timeout=0.05)  # may try again
    assert second.wait(5) is TransferOutcome.FAILED  # a dial that raises: failed, not a crash
    assert second.disposition is Disposition.FAILED and not bridge.ended.is_set()
    bridge.stop()
    assert bridge.wait(5)


def test_given_the_target_rings_out_then_no_answer_and_back_with_the_agent(tmp_path):
    dial = FakeDial(PipeCall("agent-b"))
    bridge, caller, agent, _ = _bridge(tmp_path, dial)
    transfer = bridge.transfer("sip:8002@seats", ring_timeout=0.3)
    assert transfer.wait(5) is TransferOutcome.FAILED
    assert transfer.disposition is Disposition.NO_ANSWER and not bridge.held
    bridge.stop()
    assert bridge.wait(5)


def test_given_the_agent_hangs_up_while_the_target_rings_then_the_caller_waits_for_it(tmp_path):
    target = PipeCall("agent-b")
    dial = FakeDial(target)
    bridge, caller, agent, hooked = _bridge(tmp_path, dial)
    transfer = bridge.transfer("sip:8002@seats", ring_timeout=5)
    agent.far_end_hangs_up()
    time.sleep(0.3)
    assert not caller.ended.is_set() and not bridge.ended.is_set()
    sent_before = len(caller.sent)
    time.sleep(0.3)
    assert len(caller.sent) > sent_before  # still hold audio, the agent gone
    dial.answer.set()
    assert transfer.wait(5) is TransferOutcome.COMPLETED
    target.feed(tone(700, 0.2))
    wait_until(lambda: _heard(caller, tone(700, 0.2)), 5, message="b heard")
    caller.far_end_hangs_up()
    assert bridge.wait(5) and target.ended.is_set()
    assert len(hooked) == 1


def test_given_the_agent_gone_and_the_target_busy_then_the_caller_is_kept_for_the_queue(
    tmp_path,
):
    dial = FakeDial(PipeCall("agent-b"))
    bridge, caller, agent, _ = _bridge(tmp_path, dial)
    transfer = bridge.transfer("sip:8002@seats", ring_timeout=0.5)
    agent.far_end_hangs_up()
    assert transfer.wait(5) is TransferOutcome.FAILED
    assert bridge.wait(5)
    assert bridge.result.caller_kept and bridge.result.ended_by is Side.AGENT
    assert not caller.ended.is_set()  # the queue flow takes them back


def test_given_the_caller_hangs_up_while_the_target_rings_then_the_ring_is_cancelled(tmp_path):
    dial = FakeDial(PipeCall("agent-b"))
    bridge, caller, agent, hooked = _bridge(tmp_path, dial)
    transfer = bridge.transfer("sip:8002@seats", ring_timeout=5)
    caller.far_end_hangs_up()
    assert transfer.wait(5) is TransferOutcome.CANCELLED
    assert dial.cancelled.is_set() and bridge.wait(5) and agent.ended.is_set()
    assert hooked == [] and not bridge.result.caller_kept


def test_given_one_transfer_under_way_then_another_or_one_without_dial_is_refused(tmp_path):
    dial = FakeDial(PipeCall("agent-b"))
    bridge, *_ = _bridge(tmp_path, dial)
    bridge.transfer("sip:8002@seats", ring_timeout=5)
    with pytest.raises(TransferRefused):
        bridge.transfer("sip:8003@seats")
    assert bridge.cancel_transfer()
    bridge.stop()
    assert bridge.wait(5)
    plain, *_ = _bridge(tmp_path, None)
    with pytest.raises(TransferRefused):
        plain.consult("sip:8003@seats")
    plain.stop()
    assert plain.wait(5)


def _consulting(tmp_path, read_timeout_s: float = 0.05):
    target = PipeCall("agent-b", remote_number="8002")
    dial = FakeDial(target)
    bridge, caller, agent, hooked = _bridge(tmp_path, dial, read_timeout_s)
    transfer = bridge.consult("sip:8002@seats", ring_timeout=5)
    dial.answer.set()
    wait_until(lambda: transfer.state is TransferState.CONSULTING, 5, message="consulting")
    asked, answered = tone(900, 0.2), tone(600, 0.2)
    agent.feed(asked)
    target.feed(answered)
    wait_until(lambda: _heard(target, asked), 5, message="the agent heard by the target")
    wait_until(lambda: _heard(agent, answered), 5, message="the target heard by the agent")
    assert not _heard(caller, asked) and not _heard(caller, answered)  # held, hears neither
    assert bridge.held
    return bridge, caller, agent, target, transfer, hooked


def test_given_an_attended_transfer_completed_then_the_caller_talks_to_the_target(tmp_path):
    bridge, caller, agent, target, transfer, hooked = _consulting(tmp_path)
    assert bridge.complete_transfer()
    assert transfer.wait(5) is TransferOutcome.COMPLETED and agent.ended.is_set()
    caller.feed(tone(400, 0.2))
    target.feed(tone(750, 0.2))
    wait_until(lambda: _heard(target, tone(400, 0.2)), 5, message="caller to target")
    wait_until(lambda: _heard(caller, tone(750, 0.2)), 5, message="target to caller")
    assert hooked == [("caller-1", "agent-a", "agent-b", TransferKind.ATTENDED)]
    bridge.stop()
    assert bridge.wait(5)


def test_given_an_attended_transfer_cancelled_then_the_agent_is_back_with_the_caller(tmp_path):
    bridge, caller, agent, target, transfer, hooked = _consulting(tmp_path)
    assert bridge.cancel_transfer()
    assert transfer.wait(5) is TransferOutcome.CANCELLED
    assert target.ended.is_set() and not agent.ended.is_set() and not bridge.held
    agent.feed(tone(1100, 0.2))
    wait_until(lambda: _heard(caller, tone(1100, 0.2)), 5, message="a heard again")
    assert hooked == [] and not bridge.complete_transfer()
    bridge.stop()
    assert bridge.wait(5)


def test_given_the_agent_hangs_up_during_the_consultation_then_the_transfer_completes(tmp_path):
    bridge, caller, agent, target, transfer, hooked = _consulting(tmp_path)
    agent.far_end_hangs_up()
    assert transfer.wait(5) is TransferOutcome.COMPLETED
    target.feed(tone(750, 0.2))
    wait_until(lambda: _heard(caller, tone(750, 0.2)), 5, message="target to caller")
    assert not caller.ended.is_set() and len(hooked) == 1
    bridge.stop()
    assert bridge.wait(5)


def test_given_the_target_hangs_up_during_the_consultation_then_the_agent_is_back(tmp_path):
    bridge, caller, agent, target, transfer, hooked = _consulting(tmp_path)
    target.far_end_hangs_up()
    assert transfer.wait(5) is TransferOutcome.FAILED
    assert not agent.ended.is_set() and not caller.ended.is_set() and not bridge.held
    bridge.stop()
    assert bridge.wait(5)


def _speak(*said: tuple[PipeCall, bytes]) -> None:
    """Each leg's phone sends its audio as phones do, a 20 ms frame every 20 ms, all at
    once (the mixer keeps in step what arrives in step, not a second's burst)."""
    start = time.monotonic()
    for i in range(max(len(pcm) for _, pcm in said) // FRAME_BYTES):
        for leg, pcm in said:
            leg.feed(pcm[i * FRAME_BYTES : (i + 1) * FRAME_BYTES])
        time.sleep(max(0.0, start + 0.02 * (i + 1) - time.monotonic()))
    time.sleep(0.3)


def _parts(heard: bytes, *said: bytes) -> list[float]:
    """How much of each of ``said`` is in ``heard`` (normalised correlation at its best lag);
    for a sum of uncorrelated parts the squares add up to 1."""
    return [best_lag_correlation(part, heard) for part in said]


def test_given_a_merged_consultation_then_each_of_three_hears_the_other_two(tmp_path):
    # A PipeCall's read that times out stands for its whole timeout in silence: a long one,
    # as the edge's own, so a stall of the feeding thread does not shift one part mid-mix.
    bridge, caller, agent, third, transfer, hooked = _consulting(tmp_path, 0.2)
    assert bridge.merge() and bridge.three_way
    assert transfer.wait(5) is TransferOutcome.MERGED and not bridge.held
    start = {leg.call_id: len(leg.sent) for leg in (caller, agent, third)}
    said = {leg.call_id: noise(1.0, seed) for seed, leg in enumerate((caller, agent, third))}
    _speak(*((leg, said[leg.call_id]) for leg in (caller, agent, third)))
    for leg in (caller, agent, third):
        heard = bytes(leg.sent[start[leg.call_id] :])
        own, *others = [said[leg.call_id]] + [said[o] for o in said if o != leg.call_id]
        parts = _parts(heard, *others)
        assert min(parts) > 0.5 and sum(p * p for p in parts) > 0.95, (leg.call_id, parts)
        assert abs(best_lag_correlation(own, heard)) < 0.2  # nobody hears themselves
    third.far_end_hangs_up()  # the department leaves: caller and agent talk on
    wait_until(lambda: not bridge.three_way, 5, message="two-party again")
    agent.feed(tone(1100, 0.2))
    wait_until(lambda: _heard(caller, tone(1100, 0.2)), 5, message="a heard")
    assert hooked == [] and bridge.result.three_way_s > 0.5
    bridge.stop()
    assert bridge.wait(5)


def test_given_the_agent_leaves_a_three_way_then_the_caller_and_the_third_talk_on(tmp_path):
    bridge, caller, agent, third, transfer, hooked = _consulting(tmp_path)
    assert bridge.merge()
    agent.far_end_hangs_up()
    wait_until(lambda: not bridge.three_way, 5, message="two-party again")
    assert bridge.legs[Side.AGENT] is third and not caller.ended.is_set()
    third.feed(tone(750, 0.2))
    caller.feed(tone(450, 0.2))
    wait_until(lambda: _heard(caller, tone(750, 0.2)), 5, message="third to caller")
    wait_until(lambda: _heard(third, tone(450, 0.2)), 5, message="caller to third")
    assert hooked == [("caller-1", "agent-a", "agent-b", TransferKind.THREE_WAY)]
    caller.far_end_hangs_up()
    assert bridge.wait(5) and third.ended.is_set()


def test_given_the_caller_leaves_a_three_way_then_everyone_is_hung_up(tmp_path):
    bridge, caller, agent, third, transfer, hooked = _consulting(tmp_path)
    assert bridge.merge()
    caller.far_end_hangs_up()
    assert bridge.wait(5) and agent.ended.is_set() and third.ended.is_set()


def test_given_a_silent_monitor_then_it_hears_both_and_nobody_hears_it(tmp_path):
    bridge, caller, agent, _ = _bridge(tmp_path, None, 0.2)
    supervisor = PipeCall("supervisor", remote_number="9001")
    bridge.monitor(supervisor, name="zhang")
    said_by_caller, said_by_agent, whispered = noise(1.0, 1), noise(1.0, 2), noise(1.0, 3)
    _speak((caller, said_by_caller), (agent, said_by_agent), (supervisor, whispered))
    parts = _parts(bytes(supervisor.sent), said_by_caller, said_by_agent)
    assert min(parts) > 0.5 and sum(p * p for p in parts) > 0.95, parts
    assert best_lag_correlation(said_by_agent, bytes(caller.sent)) > 0.99
    assert best_lag_correlation(said_by_caller, bytes(agent.sent)) > 0.99
    for leg in (caller, agent):
        assert abs(best_lag_correlation(whispered, bytes(leg.sent))) < 0.2
    assert bridge.result.monitored_by == ["zhang"]
    supervisor.far_end_hangs_up()  # the supervisor leaving changes nothing for the call
    agent.feed(tone(1100, 0.2))
    wait_until(lambda: _heard(caller, tone(1100, 0.2)), 5, message="a still heard")
    caller.far_end_hangs_up()
    assert bridge.wait(5) and agent.ended.is_set()
