"""The queue and the bridge under load (issue 17), a first sketch: sipp callers → one SIP
edge whose handler is the queue flow → the ACD with agents in memory, every agent's seat
answered by one sipp UAS → bridged until the caller's BYE.

    .venv/bin/python bench/acd.py [--json] [--calls 60 --rate 6 --agents 40 --hold-ms 4000]

What it measures now: ``lost_calls`` (placed − answered − abandoned − overflowed − callbacks;
must be 0), ``answered_within_15s_share``, the ACD's pick-to-dial delay
(``agent_ring_delay_ms_p95``: from the engine choosing the agent to the ringer starting the
INVITE), the wait, the peak of calls bridged at once, and the edge process's CPU. The
offered load is ``rate × (hold + set-up) / agents`` (the occupancy the defaults aim at is
about 0.8).

Not yet: ``bridged_calls_max_good`` (a search for the most concurrent bridged calls with
clean audio) and ``bridge_audio_corr_min`` at load, which need callers and agents that send
and check audio (the sipp callers here send none; the audio path is shown by
tests/telephony/test_bridge_sip.py, one call at a time); and the rtpengine comparison.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The sipp peers and fake prompts come from tests/, which is not installed.
sys.path.insert(0, str(ROOT))

from bench import _common as common
from telephony.acd import Acd, AcdConfig, Outcome, QueueResult
from telephony.acd_dial import DialRinger
from telephony.acd_memory import MemoryAgentPool
from telephony.endpoint import Call
from telephony.flows import FlowHooks, FlowSettings
from telephony.queue_flow import QueueHooks, QueueOutcome, serve_queue
from telephony.sip_config import SipConfig
from telephony.sip_edge import SipEdge
from tests.telephony.fakes import FakePrompts
from tests.telephony.sip_peers import HOST, free_udp_port, start_sipp


def run(*, calls: int, rate: int, agents: int, hold_ms: int, ring_timeout_s: float) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="bench-acd-"))
    # Where both sides' RTP goes: a socket nobody reads (the sipp peers send no audio).
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    seat_port = free_udp_port()
    results: list[QueueResult] = []
    outcomes: list[QueueOutcome] = []
    bridged_now = 0
    bridged_peak = 0
    lock = threading.Lock()

    def on_bridged(call: Call, leg: Call, offer: Any) -> None:
        nonlocal bridged_now, bridged_peak
        with lock:
            bridged_now += 1
            bridged_peak = max(bridged_peak, bridged_now)

    def on_ended(call: Call, result: Any) -> None:
        nonlocal bridged_now
        with lock:
            bridged_now -= 1

    pool = MemoryAgentPool()
    box: list[Any] = []
    ringer = DialRinger(
        dial=lambda uri, ring_timeout, cancel=None: box[0].dial(
            uri, ring_timeout=ring_timeout, cancel=cancel
        ),
        target_of=lambda extension: f"sip:{extension}@{HOST}:{seat_port}",
        acd=lambda: box[1],
    )
    acd = Acd(
        pool=pool,
        ringer=ringer,
        config=AcdConfig(ring_timeout_s=ring_timeout_s, overflow_after_s=60.0),
        on_result=results.append,
    )
    pool.on_change = acd.wake
    for n in range(agents):
        pool.sign_in(f"agent-{n}", f"8{n:03d}")
        pool.set_ready(f"agent-{n}")
    serve = functools.partial(
        serve_queue,
        acd=acd,
        prompts=FakePrompts(),
        hooks=FlowHooks(),
        settings=FlowSettings(recording_dir=workdir),
        queue_hooks=QueueHooks(
            on_bridged=on_bridged,
            on_bridge_ended=on_ended,
            on_outcome=lambda call, outcome: outcomes.append(outcome),
        ),
    )

    def handler(call: Call) -> None:
        serve(call)

    edge = SipEdge(
        SipConfig(host=HOST, port=0, rtp_low=20000, rtp_high=30000, max_calls=4 * calls + 10)
    )
    box += [edge, acd]
    edge.start(on_call=handler, on_ended=lambda call: None)
    acd.start()
    timeout = calls / rate + hold_ms / 1000 + 60
    seats = start_sipp(
        "uas_agent_answer.xml",
        port=seat_port,
        calls=calls,
        keys={"rtp_port": sink.getsockname()[1]},
        timeout=timeout,
    )
    cpu_before = common.cpu_seconds(os.getpid())
    started = time.monotonic()
    callers = start_sipp(
        "uac_call.xml",
        target=f"{HOST}:{edge.address[1]}",
        calls=calls,
        rate=rate,
        hold=hold_ms,
        keys={"rtp_port": sink.getsockname()[1], "fmts": "0 101"},
        timeout=timeout,
    )
    try:
        callers.communicate(timeout=timeout + 30)
        deadline = time.monotonic() + 30
        while len(outcomes) < calls and time.monotonic() < deadline:
            time.sleep(0.1)  # the last flows finishing
        wall = time.monotonic() - started
        cpu = common.cpu_seconds(os.getpid()) - cpu_before
    finally:
        acd.stop()
        edge.stop()
        seats.kill()
        seats.communicate(timeout=10)
        sink.close()
    by = {o: sum(1 for r in results if r.outcome is o) for o in Outcome}
    answered = [r for r in results if r.outcome is Outcome.ANSWERED]
    waits = [r.waited_s for r in answered]
    delays = list(ringer.ring_delays_ms)
    return {
        "calls_placed": calls,
        "callers_sipp_exit": callers.returncode,
        "answered": by[Outcome.ANSWERED],
        "abandoned": by[Outcome.ABANDONED],
        "overflowed": by[Outcome.OVERFLOW],
        "callbacks": by[Outcome.CALLBACK],
        "lost_calls": calls - sum(by.values()),
        "answered_within_15s_share": (
            round(sum(1 for w in waits if w <= 15) / len(answered), 4) if answered else None
        ),
        "wait_s_p50": round(statistics.median(waits), 3) if waits else None,
        "wait_s_max": round(max(waits), 3) if waits else None,
        "agent_ring_delay_ms_p95": round(common.percentile(delays, 95), 3) if delays else None,
        "agent_ring_delay_ms_max": round(max(delays), 3) if delays else None,
        "bridged_peak": bridged_peak,
        "offered_occupancy": round(rate * (hold_ms / 1000) / agents, 2),
        "edge_cpu_s": round(cpu, 2),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--rate", type=int, default=6)
    parser.add_argument("--agents", type=int, default=30)
    parser.add_argument("--hold-ms", type=int, default=4000)
    parser.add_argument("--ring-timeout-s", type=float, default=10.0)
    args = parser.parse_args()
    common.say(f"{args.calls} calls at {args.rate}/s, {args.agents} agents, {args.hold_ms} ms")
    result = run(
        calls=args.calls,
        rate=args.rate,
        agents=args.agents,
        hold_ms=args.hold_ms,
        ring_timeout_s=args.ring_timeout_s,
    )
    result["machine"] = common.machine()
    result["targets"] = common.verdicts(
        result,
        {
            "lost_calls": ("<=", 0),
            "answered_within_15s_share": (">=", 0.95),
            "agent_ring_delay_ms_p95": ("<=", 50),
        },
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
