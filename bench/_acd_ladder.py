"""bench/acd.py's ladder: how many calls one `hotline sip` keeps bridged with clean audio
both ways, and the robot's calls as the baseline of what a call costs the edge.

A step of ``n``: ``SAMPLE`` calls whose two legs are Python peers (``_acd_audio``: sipp does
the signalling, the peers the media) and ``n`` calls whose two legs are sipp streaming audio
(``rtp_stream``, callers and seats each their own noise, in a loop). The sampled operators
are made the longest idle before the step (``order_ready``) and their calls are placed
first, so the queue gives the sampled calls to the sampled seats. Once every call of the
step is bridged, each sampled caller's peer sends 6 s of noise and each sampled seat's peer
answers with its own; both are compared with what the other leg received.

A step is good when: every sipp call succeeded (callers and seats), every call was answered
by an operator and stayed up through the measurement, every sampled call correlates
≥ ``CORR_MIN`` both ways, and on every sampled leg the edge kept the pace — no gap between
two packets longer than ``GAP_MAX_MS`` while the noise came (a gap is packets late or lost).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import _common as common
from bench._acd_audio import NOISE_S, Peer, check_leg
from bench._acd_platform import (
    SCENARIOS,
    Operator,
    Record,
    order_ready,
    records,
    ring_delays_ms,
    scenario_with,
    seat_answers_ms,
    start_sipp,
    wait_records,
)
from bench._call_platform import Platform, ThreadSampler
from tests.telephony.sip_peers import SCENARIOS as TEST_SCENARIOS

SAMPLE = 6  # sampled calls a step (the rig's sampled operators)
CORR_MIN = 0.99
GAP_MAX_MS = 200.0
CALLER_MEDIA, SEAT_MEDIA = 20000, 30000  # sipp's rtp_stream ports start here (the edge: 40000+)
# The sampled sipps' own media ports (-mp, and the 3 after it), fixed apart from the above,
# the edge's RTP (40000-49999, its rtpengine taps' too), rtpengine's (50000-59999) and the
# OS's ephemeral ports: a port picked free by the bench may be taken before sipp binds it.
SAMPLE_CALLER_MEDIA, SAMPLE_SEAT_MEDIA = 25000, 26000


@dataclass
class Rig:
    """What every step uses: the platform, its database and doorbell, the operators."""

    platform: Platform
    url: str
    workdir: Path
    bell: Any
    sampled: list[Operator]
    sample_ports: list[int]
    load: list[Operator]
    load_port: int
    caller_audio: Path
    seat_audio: Path
    greeting_s: float
    # "rtpengine": the edge re-INVITEs both phones of a bridged call to rtpengine (its pid
    # for the CPU figures); the phones' scenarios answer that re-INVITE.
    media_relay: str = "own"
    rtpengine_pid: int | None = None


# The phones' answer to the edge's re-INVITE (rtpengine mode): 200 with their media port,
# again for a retransmitted re-INVITE (the edge's timer A ran out before our 200 came).
_REINVITE_ANSWER = """  <recv request="INVITE" timeout="600000"/>
  <label id="91"/>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687638 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio MEDIA_PORT RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=ptime:20
    ]]>
  </send>
  <recv request="INVITE" optional="true" next="91"/>
  <recv request="ACK" crlf="true"/>
"""


def _scenario(rig: Rig, source: str, name: str, replace: dict[str, str], *, after: str) -> Path:
    """bench/scenarios/``source`` as ``scenario_with`` writes it, answering the edge's
    re-INVITE right after the line ``after`` in rtpengine mode (with the media port the
    scenario's own SDP offers: ``MEDIA_PORT``, ``[rtp_port]`` or sipp's rtp_stream port)."""
    text = (SCENARIOS / source).read_text()
    if rig.media_relay == "rtpengine":
        media = next(
            (port for port in ("MEDIA_PORT", "[rtp_port]") if port in text),
            "[rtpstream_audio_port]",
        )
        at = text.index(after) + len(after)
        text = text[:at] + _REINVITE_ANSWER.replace("MEDIA_PORT", media) + text[at:]
    for old, new in replace.items():
        text = text.replace(old, new)
    path = rig.workdir / name
    path.write_text(text)
    return path


def _reinvited_to(msg_file: Path) -> tuple[str, int] | None:
    """Where the last INVITE a sampled phone received told it to send (sipp's message log)."""
    text = msg_file.read_text(errors="replace") if msg_file.exists() else ""
    found = []
    for block in re.split(r"^-{10,}.*$", text, flags=re.M):
        if "message received" in block and re.search(r"^INVITE ", block, re.M):
            port = re.search(r"^m=audio (\d+)", block, re.M)
            host = re.search(r"^c=IN IP4 (\S+)", block, re.M)
            if port and host:
                found.append((host.group(1), int(port.group(1))))
    return found[-1] if found else None


def _follow_reinvites(
    rig: Rig, n: int, callers_p: list[Peer], seats_p: list[Peer], seen: list[Record]
) -> None:
    """rtpengine mode: each sampled peer sends where its phone's re-INVITE said (as a phone
    does), not to the edge it heard first; a seat phone's first INVITE is the edge's own.
    Only the sampled calls that were bridged are waited for (a bounded wait: the step's
    calls hang up on their own clock meanwhile)."""
    answered = {r.agent_extension for r in seen if r.agent_answered_at is not None}
    deadline = time.monotonic() + 10
    for i, peer in enumerate(callers_p):
        msg = rig.workdir / f"caller-peer-{n}-{i}.msg"
        while (to := _reinvited_to(msg)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        peer.edge = to
    for i, peer in enumerate(seats_p):
        if rig.sampled[i].extension not in answered:
            continue  # its seat was never rung: no re-INVITE will come
        msg = rig.workdir / f"seat-peer-{n}-{i}.msg"
        while time.monotonic() < deadline:
            text = msg.read_text(errors="replace") if msg.exists() else ""
            if text.count("m=audio") >= 3:  # received INVITE, our 200, received re-INVITE
                break
            time.sleep(0.1)
        peer.edge = _reinvited_to(msg)


def _follow_early(
    rig: Rig, n: int, callers_p: list[Peer], seats_p: list[Peer], stop: threading.Event
) -> None:
    """rtpengine mode: each sampled peer follows its phone's re-INVITE as soon as it comes,
    so that its keep-alive silence goes to rtpengine from then on, as a phone's RTP would
    (``_follow_reinvites`` waits for the stragglers before the noise)."""
    while not stop.wait(0.25):
        for i, peer in enumerate(callers_p):
            to = _reinvited_to(rig.workdir / f"caller-peer-{n}-{i}.msg")
            if to is not None:
                peer.edge = to
        for i, peer in enumerate(seats_p):
            msg = rig.workdir / f"seat-peer-{n}-{i}.msg"
            text = msg.read_text(errors="replace") if msg.exists() else ""
            if text.count("m=audio") >= 3:  # received INVITE, our 200, received re-INVITE
                peer.edge = _reinvited_to(msg)


def _seat_scenarios(rig: Rig) -> tuple[Path, Path]:
    ack = '  <recv request="ACK" crlf="true"/>\n'
    load = _scenario(
        rig,
        "acd_seat.xml",
        "acd_seat_load.xml",
        {"MEDIA_PORT": "[rtpstream_audio_port]", "AGENT_FILE": str(rig.seat_audio)},
        after=ack,
    )
    peer = _scenario(
        rig, "acd_seat.xml", "acd_seat_peer.xml", {"MEDIA_PORT": "[rtp_port]"}, after=ack
    )
    text = peer.read_text()
    start, end = text.index("  <nop>"), text.index("</nop>") + len("</nop>\n")
    peer.write_text(text[:start] + text[end:])
    return load, peer


# A thread's kernel name (15 bytes of its Python name) -> its group in ``sip_threads_cpu_s``:
# bench/_call_platform's groups, plus the bridge's own threads.
_THREAD_GROUPS = (
    ("rtp-loop", "rtp_loop"),
    ("bridge-", "bridge_relays"),  # two per bridged call: they read the legs
    ("tap-pump", "tap_pump"),  # rtpengine mode: every call's taps
    ("sip-recv", "sip_recv"),
    ("sip-timers", "sip_timers"),
    ("sip-start", "sip_start"),
    ("sip-ended", "sip_ended_observer"),
    ("queue-records", "queue_records"),
    ("call-finish", "call_finishers"),
    ("call-transcript", "transcript_waiters"),
    ("call-", "call_flows"),
    ("asr-decoder", "decoder_pipes"),
    ("asr-", "live_transcribers"),
    ("cdr-partials", "partial_writer"),
    ("acd", "acd"),
    ("python", "main"),
)


class _Threads(ThreadSampler):
    """Where the SIP process's CPU went in a step, by thread group (``_THREAD_GROUPS``)."""

    def groups(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for tid, (name, cpu) in self._last.items():
            group = next((g for prefix, g in _THREAD_GROUPS if name.startswith(prefix)), name)
            out[group] = out.get(group, 0.0) + cpu - self._first[tid]
        out["unattributed"] = self.total - sum(out.values())
        return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v}


def _cpu(rig: Rig) -> tuple[float, float, tuple[float, float], float]:
    sip, decoders = rig.platform.cpu_split()
    relay = common.cpu_seconds(rig.rtpengine_pid) if rig.rtpengine_pid else 0.0
    return sip, decoders, common.machine_busy(), relay


def ladder_step(rig: Rig, n: int, *, rate: float, room_s: float = 30.0) -> dict[str, Any]:
    """One step: ``n`` sipp calls with audio both ways plus the sampled calls (see above).
    ``room_s``: how long the calls stay up for their bridging before the noise plays (a
    loaded platform takes seconds to open a ticket and the records of each call)."""
    assert n <= len(rig.load)
    # An operator a previous step left on a call cannot take one of this step's.
    busy = order_ready(rig.url, rig.bell, [o.user_id for o in rig.sampled + rig.load])
    log_from = rig.platform.log.stat().st_size  # this step's picks are logged after this
    load_seat, peer_seat = _seat_scenarios(rig)
    caller = _scenario(
        rig, "acd_caller.xml", "acd_caller_run.xml", {"AUDIO_FILE": str(rig.caller_audio)},
        after="  </nop>\n",
    )  # fmt: skip
    relayed = rig.media_relay == "rtpengine"
    ramp_s = n / rate
    # Greeting, the ramp, the bridging (seconds under load: a ticket and records per call),
    # the noise, and room either side.
    hold_ms = round(1000 * (rig.greeting_s + ramp_s + room_s + NOISE_S + 6))
    bound_s = hold_ms / 1000 + ramp_s + 60
    callers_p = [Peer(seed=100 + i) for i in range(len(rig.sampled))]
    seats_p = [Peer(seed=200 + i) for i in range(len(rig.sampled))]
    runs = []
    following = threading.Event()
    if relayed:
        threading.Thread(
            target=_follow_early,
            args=(rig, n, callers_p, seats_p, following),
            name="acd-follow",
            daemon=True,
        ).start()
    try:
        seat_runs = [
            start_sipp(
                # room for calls rung again after a failed ring; stopped once callers end
                load_seat, workdir=rig.workdir, name=f"seats-{n}", calls=2 * n,
                port=rig.load_port, media_port=SEAT_MEDIA, timeout_s=bound_s, trace=True,
            )
        ] + [
            start_sipp(
                peer_seat, workdir=rig.workdir, name=f"seat-peer-{n}-{i}", calls=2,
                port=rig.sample_ports[i], keys={"rtp_port": seats_p[i].port},
                media_port=SAMPLE_SEAT_MEDIA + 10 * i, timeout_s=bound_s + 30, trace=relayed,
            )
            for i in range(len(rig.sampled))
        ]  # fmt: skip
        runs += seat_runs
        # The sampled calls first, bridged to the sampled seats before the load comes; they
        # hang up last (a greeting and the wait for their bridging later).
        sample_hold_ms = hold_ms + round(1000 * (rig.greeting_s + 8))
        sample_runs = [
            start_sipp(
                TEST_SCENARIOS / ("uac_call_reinvited.xml" if relayed else "uac_call.xml"),
                workdir=rig.workdir, name=f"caller-peer-{n}-{i}",
                calls=1, target=rig.platform.target, hold_ms=sample_hold_ms,
                keys={"rtp_port": callers_p[i].port, "fmts": "0"}, timeout_s=bound_s + 30,
                media_port=SAMPLE_CALLER_MEDIA + 10 * i, trace=relayed,
            )
            for i in range(len(rig.sampled))
        ]  # fmt: skip
        runs += sample_runs
        wait_records(
            rig.url,
            [r.pid for r in sample_runs],
            lambda rs: sum(r.agent_answered_at is not None for r in rs) >= len(rig.sampled),
            timeout_s=rig.greeting_s + 20,
        )
        load_run = start_sipp(
            caller, workdir=rig.workdir, name=f"callers-{n}", calls=n,
            target=rig.platform.target, rate=rate, hold_ms=hold_ms,
            media_port=CALLER_MEDIA, timeout_s=bound_s,
        )  # fmt: skip
        runs.append(load_run)
        pids = [r.pid for r in sample_runs] + [load_run.pid]
        total = n + len(rig.sampled)
        seen = wait_records(
            rig.url,
            pids,
            lambda rs: sum(r.agent_answered_at is not None for r in rs) >= total,
            timeout_s=rig.greeting_s + ramp_s + room_s,
        )
        bridged_before = sum(r.agent_answered_at is not None for r in seen)
        if relayed:
            following.set()
            _follow_reinvites(rig, n, callers_p, seats_p, seen)
        cpu0 = _cpu(rig)
        t0 = time.monotonic()
        with _Threads(rig.platform, 1.0) as threads:
            for peer in callers_p:
                peer.speak(wait_s=1.0)
            waiting = [peer.speak_when_heard(wait_s=3.0) for peer in seats_p]
            # The noise plays out in real time; then 1.5 s for the last packets to come.
            time.sleep(NOISE_S + 1.5)
            cpu1 = _cpu(rig)
        window_s = time.monotonic() - t0
        measured_end = datetime.now(UTC)
        for thread in waiting:
            thread.join(1)
        callers_end = [r.finish(bound_s + 30) for r in [*sample_runs, load_run]]
        # The calls' records end first, then the seats' phones stop: a phone stopped
        # before the edge's BYE reached it leaves the BYE retransmitted into the next
        # step's phone on the same port, which counts it as a failed call.
        seen = wait_records(
            rig.url, pids, lambda rs: all(r.ended_at is not None for r in rs), timeout_s=30
        )
        time.sleep(1.0)  # the agents' BYEs follow the callers' within a relay wake-up
        ends = [r.stop() for r in seat_runs] + callers_end
    finally:
        following.set()
        for r in runs:
            r.kill()
        for peer in callers_p + seats_p:
            peer.close()
    stayed_up = sum(r.ended_at is not None and r.ended_at >= measured_end for r in seen)
    figures = _step_figures(
        rig, n, seen, ends, callers_p, seats_p, sample_runs, bridged_before, cpu0, cpu1, window_s
    )
    figures["stayed_up_through_measurement"] = stayed_up
    # Queue pick → the seat's phone receiving the INVITE (the edge's log, the seats' trace):
    # how long the step's calls waited on the edge's side of a ring.
    trace = rig.workdir / f"seats-{n}.msg"
    with open(rig.platform.log, "rb") as log:
        log.seek(log_from)
        picks = log.read().decode(errors="replace")
    seats_trace = trace.read_text(errors="replace") if trace.exists() else ""
    delays = ring_delays_ms(picks, [seats_trace])
    figures["ring_delay_ms"] = {
        "rings": len(delays),
        "p50": round(common.percentile(delays, 50), 1) if delays else None,
        "p95": round(common.percentile(delays, 95), 1) if delays else None,
        "max": round(max(delays), 1) if delays else None,
    }
    # The load seats' sipp: INVITE (ring or re-INVITE) in → its 200 out, and INVITEs the
    # edge had to send again. A late phone is the bench's, not the edge's.
    answers, again = seat_answers_ms(seats_trace)
    figures["seat_phone_answer_ms"] = {
        "answers": len(answers),
        "p50": round(common.percentile(answers, 50), 1) if answers else None,
        "p95": round(common.percentile(answers, 95), 1) if answers else None,
        "max": round(max(answers), 1) if answers else None,
        "invites_again": again,
    }
    # What the edge's log says went wrong in the step (missed rings, fallbacks, errors).
    figures["edge_log"] = {
        "rings_missed": picks.count(" did not answer ("),
        "own_relay_fallbacks": picks.count("own relay)") + picks.count("back to the own relay"),
        "errors": picks.count(" ERROR"),
    }
    # CPU seconds of the SIP process's threads in the window, by group
    figures["sip_threads_cpu_s"] = threads.groups()
    figures["operators_busy_at_start"] = len(busy)
    figures["good"] = figures["good"] and stayed_up == n + len(rig.sampled) and not busy
    return figures


def _step_figures(
    rig: Rig,
    n: int,
    seen: list[Record],
    ends: list[Any],
    callers_p: list[Peer],
    seats_p: list[Peer],
    sample_runs: list[Any],
    bridged_before: int,
    cpu0: tuple[float, float, tuple[float, float], float],
    cpu1: tuple[float, float, tuple[float, float], float],
    window_s: float,
) -> dict[str, Any]:
    seat_ends, caller_ends = ends[: 1 + len(rig.sampled)], ends[1 + len(rig.sampled) :]
    by_ext = {o.extension: i for i, o in enumerate(rig.sampled)}
    legs: list[dict[str, Any]] = []
    misrouted = 0
    for i, run in enumerate(sample_runs):
        mine = [r for r in seen if f"-{run.pid}@" in r.call_id]
        seat = by_ext.get(mine[0].agent_extension or "") if mine else None
        if seat is None:
            misrouted += 1
            continue
        up = check_leg(callers_p[i], seats_p[seat])  # caller → operator
        down = check_leg(seats_p[seat], callers_p[i])  # operator → caller
        legs.append(
            {
                "seat": rig.sampled[seat].extension,
                "corr_to_agent": up.correlation,
                "corr_to_caller": down.correlation,
                "max_gap_ms": max(
                    g for g in (up.max_gap_ms, down.max_gap_ms, 0.0) if g is not None
                ),
                "packets": [up.packets, down.packets],
                "slip_ms": [up.slip_ms, down.slip_ms],
                "clean_pieces": [up.clean_pieces, down.clean_pieces],
                "reordered": [up.reordered, down.reordered],
                # datagrams the caller's and the seat's peer dropped (not RTP, or a stranger's)
                "strays": [callers_p[i].strays, seats_p[seat].strays],
                # how late the benchmark's own senders were (caller's, seat's)
                "sender_late_ms": [
                    round(callers_p[i].late_ms, 1),
                    round(seats_p[seat].late_ms, 1),
                ],
            }
        )
    corrs = [c for leg in legs for c in (leg["corr_to_agent"], leg["corr_to_caller"])]
    gaps = [leg["max_gap_ms"] for leg in legs]
    answered = sum(r.outcome == "agent" for r in seen)
    total = n + len(rig.sampled)
    placed = sum(e.placed for e in caller_ends)
    sip = cpu1[0] - cpu0[0]
    good = (
        all(e.returncode == 0 for e in caller_ends)
        and all(e.failed == 0 for e in seat_ends)
        and placed == total
        and sum(e.successful for e in caller_ends) == total
        and answered == total
        and bridged_before == total
        and misrouted == 0
        and len(legs) == len(rig.sampled)
        and min(corrs, default=0.0) >= CORR_MIN
        and max(gaps, default=GAP_MAX_MS + 1) <= GAP_MAX_MS
    )
    shutil.rmtree(rig.platform.data_dir / "recordings", ignore_errors=True)
    return {
        "calls": n,
        "sampled": len(rig.sampled),
        "good": good,
        "bridged_at_once": bridged_before,
        "peak_bridged": peak_bridged(seen),
        "answered": answered,
        "placed": placed,
        "sipp_successful": sum(e.successful for e in caller_ends),
        "sipp_failed": sum(e.failed for e in caller_ends) + sum(e.failed for e in seat_ends),
        "sipp_exit_codes": sorted({e.returncode for e in ends}),
        "misrouted_samples": misrouted,
        "corr_min": round(min(corrs), 5) if corrs else None,
        "max_gap_ms": max(gaps) if gaps else None,
        "sampled_legs": legs,
        "window_s": round(window_s, 2),
        "sip_process_cpu_pct": round(100 * sip / window_s, 1),
        "sip_cpu_pct_per_bridged_call": round(100 * sip / window_s / max(1, bridged_before), 3),
        "decoders_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / window_s, 1),
        "rtpengine_cpu_pct": (
            round(100 * (cpu1[3] - cpu0[3]) / window_s, 1) if rig.rtpengine_pid else None
        ),
        "machine_cpu_pct": common.machine_cpu_pct(cpu0[2], cpu1[2]),
        "sipp_tail": None if good else [e.tail[-400:] for e in ends if e.returncode != 0][:2],
    }


def peak_bridged(seen: list[Record]) -> int:
    points = []
    for r in seen:
        if r.agent_answered_at is not None and r.ended_at is not None:
            points += [(r.agent_answered_at, 1), (r.ended_at, -1)]
    peak = current = 0
    for _, delta in sorted(points, key=lambda p: (p[0], p[1])):
        current += delta
        peak = max(peak, current)
    return peak


def robot_baseline(rig: Rig, n: int, *, rate: float) -> dict[str, Any]:
    """The same callers with nobody signed in: the voice-intake robot takes every call
    (greeting, then the caller's report recorded, live ASR up to its limit). The SIP
    process's CPU per call while all of them are past the greeting is what a call costs the
    edge without a bridge — the baseline of ``bridge_cpu_ratio_vs_robot``."""
    caller = scenario_with(
        rig.workdir, "acd_caller.xml", "acd_caller_robot.xml", {"AUDIO_FILE": str(rig.caller_audio)}
    )
    ramp_s = n / rate
    hold_ms = round(1000 * (rig.greeting_s + ramp_s + 4 + 8 + 4))
    run = start_sipp(
        caller, workdir=rig.workdir, name=f"robot-{n}", calls=n, target=rig.platform.target,
        rate=rate, hold_ms=hold_ms, media_port=CALLER_MEDIA, timeout_s=hold_ms / 1000 + 60,
    )  # fmt: skip
    try:
        seen = wait_records(
            rig.url,
            [run.pid],
            lambda rs: sum(r.answered_at is not None for r in rs) >= n,
            timeout_s=ramp_s + 20,
        )
        # past the last call's greeting
        time.sleep(max(0.0, rig.greeting_s + 2 - (time.monotonic() - run.started - ramp_s)))
        cpu0, t0 = _cpu(rig), time.monotonic()
        time.sleep(8.0)  # the measurement window, all calls up
        cpu1, window_s = _cpu(rig), time.monotonic() - t0
        end = run.finish(hold_ms / 1000 + 90)
        seen = records(rig.url, [run.pid])
    finally:
        run.kill()
    sip = cpu1[0] - cpu0[0]
    shutil.rmtree(rig.platform.data_dir / "recordings", ignore_errors=True)
    return {
        "calls": n,
        "sipp_successful": end.successful,
        "robot_outcomes": sum(r.outcome == "robot" for r in seen),
        "window_s": round(window_s, 2),
        "sip_process_cpu_pct": round(100 * sip / window_s, 1),
        "sip_cpu_pct_per_call": round(100 * sip / window_s / n, 3),
        "decoders_cpu_pct": round(100 * (cpu1[1] - cpu0[1]) / window_s, 1),
        "machine_cpu_pct": common.machine_cpu_pct(cpu0[2], cpu1[2]),
    }
