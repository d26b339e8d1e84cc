"""bench/acd.py's steady load: the queue's figures at a load the operators can carry.

``agents`` operators ready (the others on a break), callers arriving as a Poisson process
of rate λ (a schedule drawn here with a fixed seed, each call's arrival written into sipp's
injection file), the operators' seats answering at once and hanging up after an
exponentially distributed talk of mean ``talk_s`` (sipp's own draw), then the platform's
wrap-up. Offered occupancy = λ · (talk + set-up + wrap-up) / agents; set-up, the ring
(pick → INVITE → 200) is milliseconds here, so λ = 0.8 · agents / (talk + wrap-up).

Figures: every placed call's end by the call records (``lost_calls``, see
``_acd_platform.call_ends``), sipp's own count of ends beside it, the share of queued calls
an operator answered within 15 s of joining the queue, and the ring delay (queue pick →
the seat's phone receiving the INVITE) from the edge's log and the seats' sipp trace.

In rtpengine mode (``Rig.media_relay``) the edge re-INVITEs both phones of each bridged call
to rtpengine when the operator answers: the seats answer that re-INVITE before their talk
begins, the callers whenever it comes (``acd_caller_poisson.xml``; an overflowed call gets
none). The phones send no RTP in either mode (a signalling load): the bench sets the edge's
media timeout to 0 and rtpengine's own to an hour (``bench/acd.py``'s ``open_rig``).
"""

from __future__ import annotations

import random
import socket
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench import _common as common
from bench._acd_ladder import Rig, _scenario
from bench._acd_platform import (
    HOST,
    SCENARIOS,
    call_ends,
    order_ready,
    ring_delays_ms,
    start_sipp,
    wait_records,
)

CREATE_RATE = 100  # sipp makes the calls this fast; each then waits for its arrival time


@dataclass(frozen=True)
class Load:
    agents: int
    calls: int
    talk_s: float
    wrap_up_s: float
    occupancy: float = 0.8
    seed: int = 17

    @property
    def rate(self) -> float:
        return self.occupancy * self.agents / (self.talk_s + self.wrap_up_s)


def arrivals(load: Load) -> list[float]:
    """Poisson arrival times (s from the start), one per call."""
    rng = random.Random(load.seed)
    at, out = 0.0, []
    for _ in range(load.calls):
        at += rng.expovariate(load.rate)
        out.append(at)
    return out


def steady_load(rig: Rig, load: Load) -> dict[str, Any]:
    assert load.agents <= len(rig.load)
    ready = [o.user_id for o in rig.load[: load.agents]]
    off = [o.user_id for o in rig.sampled + rig.load[load.agents :]]
    order_ready(rig.url, rig.bell, ready, off)
    times = arrivals(load)
    inf = rig.workdir / "arrivals.csv"
    inf.write_text(
        "SEQUENTIAL\n"
        + "".join(
            f"{max(0, round(1000 * t - 1000 * i / CREATE_RATE))}\n" for i, t in enumerate(times)
        )
    )
    seat = _scenario(
        rig, "acd_seat_talk.xml", "acd_seat_talk_run.xml",
        {"TALK_MS": str(round(1000 * load.talk_s))},
        after='<recv request="ACK" crlf="true"/>\n',  # the talk begins after the re-INVITE
    )  # fmt: skip
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # both sides' media, unread
    sink.bind((HOST, 0))
    bound_s = times[-1] + rig.greeting_s + 120 + 10 * load.talk_s
    log_start = rig.platform.log.stat().st_size
    try:
        seats = start_sipp(
            # room for calls rung again after a failed ring; stopped once the callers end
            seat, workdir=rig.workdir, name="load-seats", calls=2 * load.calls, port=rig.load_port,
            keys={"rtp_port": sink.getsockname()[1]}, timeout_s=bound_s, trace=True,
        )  # fmt: skip
        callers = start_sipp(
            SCENARIOS / "acd_caller_poisson.xml", workdir=rig.workdir, name="load-callers",
            calls=load.calls, target=rig.platform.target, rate=CREATE_RATE,
            keys={"rtp_port": sink.getsockname()[1]}, inf=inf, timeout_s=bound_s,
        )  # fmt: skip
        cpu0, busy0, t0 = rig.platform.cpu_split()[0], common.machine_busy(), time.monotonic()
        caller_end = callers.finish(bound_s + 30)
        wall = time.monotonic() - t0
        cpu1, busy1 = rig.platform.cpu_split()[0], common.machine_busy()
        seat_end = seats.stop()
        seen = wait_records(
            rig.url,
            [callers.pid],
            lambda rs: len(rs) >= caller_end.placed and all(r.ended_at is not None for r in rs),
            timeout_s=30,
        )
    finally:
        callers.kill()
        seats.kill()
        sink.close()
    with open(rig.platform.log, errors="replace") as f:
        f.seek(log_start)
        log = f.read()
    trace = (rig.workdir / "load-seats.msg").read_text(errors="replace")
    return load_figures(load, caller_end, seat_end, seen, ring_delays_ms(log, [trace]), wall) | {
        "sip_process_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1),
        "machine_cpu_pct": common.machine_cpu_pct(busy0, busy1),
    }


def load_figures(
    load: Load, caller_end: Any, seat_end: Any, seen: list[Any], delays: list[float], wall: float
) -> dict[str, Any]:
    ends = call_ends(caller_end.placed, seen)
    queued = [r for r in seen if r.queued_at is not None]
    answered = [r for r in queued if r.outcome == "agent"]
    waits = [w for r in answered if (w := r.wait_s) is not None]
    talks = [
        (r.ended_at - r.agent_answered_at).total_seconds()
        for r in answered
        if r.ended_at is not None and r.agent_answered_at is not None
    ]
    span = _span(seen)
    # λ as it came (calls over the span of their joining the queue) × what each answered
    # call held its operator (talk + wrap-up; the ring is milliseconds) / agents
    held_s = statistics.mean(talks) + load.wrap_up_s if talks else 0.0
    return {
        "agents": load.agents,
        "arrival_rate_per_s": round(load.rate, 3),
        "talk_s_mean_planned": load.talk_s,
        "talk_s_mean": round(statistics.mean(talks), 2) if talks else None,
        "wrap_up_s": load.wrap_up_s,
        "offered_occupancy": load.occupancy,
        "measured_occupancy": round(len(queued) / span * held_s / load.agents, 3) if span else None,
        **ends,
        "sipp_successful": caller_end.successful,
        "sipp_failed": caller_end.failed,
        "sipp_not_ended": caller_end.created - caller_end.successful - caller_end.failed,
        "seat_sipp_successful": seat_end.successful,
        "seat_sipp_failed": seat_end.failed,
        # national guidance: answered within 15 s of joining the queue, over the calls
        # offered to the operators (queued; there were no short abandons to take out)
        "answered_within_15s_share": (
            round(sum(w <= 15 for w in waits) / len(queued), 4) if queued else None
        ),
        "wait_s_p50": round(statistics.median(waits), 3) if waits else None,
        "wait_s_p95": round(common.percentile(waits, 95), 3) if waits else None,
        "wait_s_max": round(max(waits), 3) if waits else None,
        "agent_ring_delay_ms_p50": round(statistics.median(delays), 1) if delays else None,
        "agent_ring_delay_ms_p95": round(common.percentile(delays, 95), 1) if delays else None,
        "agent_ring_delay_ms_max": round(max(delays), 1) if delays else None,
        "rings_measured": len(delays),
        "wall_s": round(wall, 1),
    }


def _span(seen: list[Any]) -> float:
    """From the first call joining the queue to the last."""
    starts = [r.queued_at for r in seen if r.queued_at is not None]
    return (max(starts) - min(starts)).total_seconds() if len(starts) > 1 else 0.0
