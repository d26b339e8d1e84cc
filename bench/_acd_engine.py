"""bench/acd.py's engine mode: the queue flow and the bridge in this process, no database.

sipp callers (``tests/telephony/scenarios/uac_call.xml``, no audio) call one ``SipEdge`` in
this process whose handler is the queue flow (``telephony.queue_flow.serve_queue``); the
queue engine (``telephony.acd``) has agents in memory, all ready, and rings their seats with
the edge's own ``dial``; every seat is answered by one sipp UAS (``uas_agent_answer.xml``);
caller and agent stay bridged until the caller's BYE. What it isolates: the engine and the
edge without the database, the doorbell or another process — its ``agent_ring_delay_ms``
is read in-process from the ringer (pick → the INVITE about to be sent)."""

from __future__ import annotations

import functools
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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


def run_engine(*, calls: int, rate: int, agents: int, hold_ms: int, ring_timeout_s: float) -> dict:
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
