"""Operators' queue and bridge under load (issue 17), through the real `hotline sip`.

    .venv/bin/python bench/acd.py [--json] [--repeat 3] [--db sqlite|postgres] [--quick]
    .venv/bin/python bench/acd.py --mode engine [--json]   # the in-process sketch
    .venv/bin/python bench/acd.py --media-relay rtpengine --steps 50,100,150,200,250,300

``--media-relay rtpengine``: an rtpengine of the bench's own (``telephony.rtpengine.Daemon``,
userspace) and ``HOTLINE_TELEPHONY__MEDIA_RELAY=rtpengine``: each bridged call's phones are
re-INVITEd to rtpengine (the scenarios answer it, the sampled peers send where it says) and
the edge reads rtpengine's taps; the steps add ``rtpengine_cpu_pct``. The steady load runs
in that mode too: its callers and seats answer the edge's re-INVITE to rtpengine.

Platform mode (the default): `hotline sip` as a child process, as production runs it, on a
fresh database (SQLite or PostgreSQL) with operator accounts and seats; every seat's phone
registers with digest authentication (sipp), the operators are made ready as the console
makes them, callers and seats are sipp on loopback. Per repeat:

  1. baseline: the same sipp callers (audio) with nobody signed in — the voice-intake
     robot takes them; the SIP process's CPU per call (``_acd_ladder.robot_baseline``);
  2. the ladder (``_acd_ladder``): steps of concurrent bridged calls with audio both ways
     (sipp ``rtp_stream`` on both legs, plus 6 sampled calls with Python peers on both legs
     that check what arrived) until a step is not good;
  3. the steady load (``_acd_load``): Poisson callers at 80 % operator occupancy.

Figures (``TARGETS``): ``bridged_calls_max_good`` (the highest good step),
``bridge_audio_corr_min`` (the lowest sampled correlation over the good steps, both legs),
``answered_within_15s_share`` and ``lost_calls`` (steady load) and
``agent_ring_delay_ms_p95`` (queue pick → the seat's phone receiving the INVITE, from the
edge's log and the seat's sipp trace), and ``bridge_cpu_ratio_vs_robot``: the SIP process's
CPU per bridged call ÷ per robot call, same callers, same run. With ``--repeat`` each figure
is reported per repeat, with its median and worst.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import signal
import socket
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The sipp peers and fake prompts come from tests/, which is not installed.
sys.path.insert(0, str(ROOT))

from bench import _common as common
from bench._acd_ladder import SAMPLE, Rig, ladder_step, robot_baseline
from bench._acd_load import Load, steady_load
from bench._acd_platform import bell_of, make_operators, register, sign_in_all, stand_down
from bench._call_platform import logs, platform
from bench._profiling import hot_spots
from telephony import codecs
from telephony.prompts import BEEP, PromptSet
from tests.speech import deterministic_vosk_model
from tests.telephony.bridge_audio import noise
from tests.telephony.sip_peers import free_udp_port

LADDER = (10, 25, 50, 75, 100, 150, 200, 250, 300, 350, 400)
QUICK_LADDER = (10, 20)
STEADY = Load(agents=60, calls=300, talk_s=12.0, wrap_up_s=3.0)
QUICK_STEADY = Load(agents=8, calls=40, talk_s=4.0, wrap_up_s=3.0)
TARGETS = {
    "bridged_calls_max_good": (">=", 250),
    "bridge_audio_corr_min": (">=", 0.99),
    "answered_within_15s_share": (">=", 0.95),
    "lost_calls": ("<=", 0),
    "agent_ring_delay_ms_p95": ("<=", 50),
}
STEADY_FIGURES = ("answered_within_15s_share", "lost_calls", "agent_ring_delay_ms_p95")
# Larger is better for these; the worst of the repeats is then the smallest.
HIGHER_IS_BETTER = {"bridged_calls_max_good", "bridge_audio_corr_min", "answered_within_15s_share"}


@contextmanager
def database(kind: str) -> Iterator[tuple[str, str]]:
    if kind == "sqlite":
        with common.sqlite_database() as url:
            yield url, "sqlite"
    else:
        with common.postgres_database("hotline_bench_acd") as url:
            engine, _ = common.session_factory(url)
            try:
                version = common.postgres_version(engine)
            finally:
                engine.dispose()
            yield url, f"postgresql {version}"


def _free_ports_below_ephemeral(count: int, start: int = 27_000) -> list[int]:
    """UDP ports for the seats' phones, free now and below the OS's ephemeral ports
    (32768+): they are registered once and listened on again at every step, and an
    ephemeral port (an ng request's, a peer's) may be taken meanwhile."""
    ports: list[int] = []
    for port in range(start, 32_768):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"no {count} free UDP ports in {start}-32767")


def _ahead_of_the_bench(pid: int, steps: int = 3) -> int | None:
    """Every thread of ``pid`` (rtpengine) ``steps`` nice levels ahead of the bench and its
    children (Debian's rtpengine.conf suggests ``priority = -3``; its unit grants
    CAP_SYS_NICE for it): rtpengine's userspace forwarding — production forwards in the
    kernel — must not stall behind the bench's own sipp phones on two shared cores (a stall
    of 0.6 s on every sampled leg made one repeat of 2026-12-05 bad with every packet
    delivered). The nice value set, or None when not permitted (not root)."""
    nice = os.getpriority(os.PRIO_PROCESS, 0) - steps
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
    except (PermissionError, FileNotFoundError, ProcessLookupError):
        return None
    return nice


@contextmanager
def open_rig(
    *,
    db: str,
    sampled: int,
    operators: int,
    wrap_up_s: float,
    max_queue: int,
    max_calls: int | None = None,
    keep: Path | None = None,
    warmed: bool = True,
    media_relay: str = "own",
    profile: Path | None = None,
) -> Iterator[tuple[Rig, dict[str, Any]]]:
    """A fresh database with ``sampled`` + ``operators`` operator accounts and seats,
    `hotline sip` on it (``warmed``: once its recognizers are warm), and every seat's phone
    registered; nobody signed in yet. Yields the rig and what was set up."""
    info: dict[str, Any] = {}
    with ExitStack() as stack:
        if keep is not None:
            workdir = Path(tempfile.mkdtemp(prefix="hotline-acd-", dir=keep))
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hotline-acd-")))
        info["workdir"] = str(workdir) if keep is not None else None
        cache = Path(tempfile.gettempdir()) / f"hotline-bench-calls-{os.getuid()}"
        cache.mkdir(mode=0o700, exist_ok=True)
        prompts = PromptSet(cache / "prompts")
        prompts.ensure()
        greeting_s = len(prompts.compose(["greeting", BEEP])) / 2 / 8000
        model_dir = deterministic_vosk_model(cache)
        audio = {}
        for side, seed in (("caller", 1), ("seat", 2)):
            audio[side] = workdir / f"{side}.ulaw"
            audio[side].write_bytes(codecs.ulaw_encode(noise(10.0, seed)))
        url, backend = stack.enter_context(database(db))
        info["database"] = backend
        extensions = [f"7{i:03d}" for i in range(sampled)] + [f"8{i:03d}" for i in range(operators)]
        common.say(f"{len(extensions)} operators and seats ...")
        made = make_operators(url, extensions)
        extra = {
            # a call is two dialogs once bridged (the caller's and the seat's)
            "HOTLINE_TELEPHONY__MAX_CALLS": str(max_calls or 2 * max_queue + 50),
            "HOTLINE_ACD__WRAP_UP_S": str(wrap_up_s),
            # the ladder puts hundreds of calls in the queue within seconds
            "HOTLINE_ACD__OVERFLOW_QUEUE_LONGER_THAN": str(max_queue),
            # The steady load's phones send no RTP (a signalling load): a talk drawn longer
            # than the media timeout would be hung up as a vanished caller's. The ladder's
            # calls end well within it.
            "HOTLINE_TELEPHONY__RTP_TIMEOUT_S": "0",
        }
        rtpengine_pid = None
        info["media_relay"] = media_relay
        if media_relay == "rtpengine":
            from telephony.rtpengine import Daemon

            # Above the edge's RTP (40000-49999), which the edge's taps of rtpengine use too.
            daemon = Daemon(
                ng_port=free_udp_port(),
                port_min=50000,
                port_max=59999,
                log_path=workdir / "rtpengine.log",
                # The steady load's phones send no RTP, as above: rtpengine's own media
                # timeout (60 s) would drop the media of a call whose drawn talk is longer.
                extra_args=("--timeout=3600",),
            )
            stack.enter_context(daemon)
            rtpengine_pid = daemon.pid
            info["rtpengine_nice"] = _ahead_of_the_bench(rtpengine_pid)
            host, port = daemon.ng_address
            extra["HOTLINE_TELEPHONY__MEDIA_RELAY"] = "rtpengine"
            extra["HOTLINE_TELEPHONY__RTPENGINE_NG"] = f"{host}:{port}"
        p = stack.enter_context(
            platform(
                name="acd",
                url=url,
                workdir=workdir,
                prompts_dir=cache / "prompts",
                model=model_dir,
                warmed=warmed,
                extra_env=extra,
                profile=profile,
            )
        )
        seat_ports = _free_ports_below_ephemeral(sampled + 1)
        rig = Rig(
            platform=p,
            url=url,
            workdir=workdir,
            bell=bell_of(p.data_dir),
            sampled=made[:sampled],
            sample_ports=seat_ports[:sampled],
            load=made[sampled:],
            load_port=seat_ports[sampled],
            caller_audio=audio["caller"],
            seat_audio=audio["seat"],
            greeting_s=greeting_s,
            media_relay=media_relay,
            rtpengine_pid=rtpengine_pid,
        )
        reg = register(p.target, made, rig.sample_ports + [rig.load_port] * operators, workdir)
        info["registered"] = {"ok": reg.successful, "failed": reg.failed}
        common.say(f"seats registered: {reg.successful} ok, {reg.failed} failed")
        try:
            yield rig, info
        finally:
            # Never raises for an operator still on a call (a bad step's leftovers): the
            # run's figures are printed, the leftovers reported with them.
            info["teardown"] = stand_down(url, rig.bell, [o.user_id for o in made])
    info["platform_log"] = logs.get("acd")
    if profile is not None and profile.exists():
        stats = pstats.Stats(str(profile))
        # the profiled time pstats keeps; typeshed does not declare it
        info["profile"] = hot_spots(stats, wall=stats.total_tt)  # type: ignore[attr-defined]


def platform_run(
    *,
    db: str,
    ladder: tuple[int, ...],
    load: Load,
    rate: float,
    baseline_calls: int,
    keep: Path | None = None,
    media_relay: str = "own",
    profile: Path | None = None,
) -> dict[str, Any]:
    """One repeat: a fresh database and `hotline sip`, baseline, ladder, steady load."""
    result: dict[str, Any] = {"mode": "platform"}
    with open_rig(
        db=db,
        sampled=SAMPLE,
        operators=max(max(ladder), load.agents),
        wrap_up_s=load.wrap_up_s,
        max_queue=max(ladder) + SAMPLE,
        # room for the ladder's top step and for every caller of the steady load at once
        # (sized from the ladder alone, a short ladder refused steady-load calls with 503)
        max_calls=2 * max(max(ladder) + SAMPLE, load.calls) + 50,
        keep=keep,
        media_relay=media_relay,
        profile=profile,
    ) as (rig, info):
        if baseline_calls:
            common.say(f"baseline: {baseline_calls} calls to the robot ...")
            result["robot_baseline"] = robot_baseline(rig, baseline_calls, rate=rate)
            common.say(f"  {result['robot_baseline']}")
        sign_in_all(rig.url, rig.bell, rig.sampled + rig.load)
        result["ladder"] = ladder_run(rig, ladder, rate=rate)
        common.say(
            f"steady load: {load.calls} calls, {load.agents} agents, "
            f"λ {load.rate:.2f}/s, talk {load.talk_s} s, wrap-up {load.wrap_up_s} s ..."
        )
        result["steady"] = steady_load(rig, load)
        common.say(f"  {result['steady']}")
    # After the rig is down: its teardown and the platform's log are in ``info`` then.
    return result | info | figures(result)


def ladder_run(
    rig: Rig, ladder: tuple[int, ...], *, rate: float, room_s: float = 30.0
) -> list[dict[str, Any]]:
    """The steps in turn until one is not good."""
    steps = []
    for n in ladder:
        common.say(f"ladder: {n} + {len(rig.sampled)} sampled calls bridged at once ...")
        step = ladder_step(rig, n, rate=max(rate, n / 6), room_s=room_s)
        common.say(
            f"  good={step['good']} bridged {step['bridged_at_once']} corr min "
            f"{step['corr_min']} gap max {step['max_gap_ms']} ms, SIP cpu "
            f"{step['sip_process_cpu_pct']} %, machine {step['machine_cpu_pct']} %"
        )
        steps.append(step)
        if not step["good"]:
            break
    return steps


def figures(run: dict[str, Any]) -> dict[str, Any]:
    """The issue's keys from one repeat's steps."""
    good = [s for s in run["ladder"] if s["good"]]
    failed = [s for s in run["ladder"] if not s["good"]]
    steady = run["steady"] or dict.fromkeys(STEADY_FIGURES)
    base = run.get("robot_baseline")
    same = next((s for s in run["ladder"] if base and s["calls"] == base["calls"]), None)
    ratio = None
    if base and same and base["sip_cpu_pct_per_call"]:
        ratio = round(same["sip_cpu_pct_per_bridged_call"] / base["sip_cpu_pct_per_call"], 2)
    return {
        "bridged_calls_max_good": good[-1]["calls"] + good[-1]["sampled"] if good else 0,
        "bridged_failed_at": failed[0]["calls"] + failed[0]["sampled"] if failed else None,
        "bridge_audio_corr_min": min((s["corr_min"] for s in good), default=None),
        "answered_within_15s_share": steady["answered_within_15s_share"],
        "lost_calls": steady["lost_calls"],
        "agent_ring_delay_ms_p95": steady["agent_ring_delay_ms_p95"],
        "bridge_cpu_ratio_vs_robot": ratio,
        "rtpengine_cpu_ratio": None,  # not measured: see bench/README.md
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and worst of each figure over the repeats."""
    out: dict[str, Any] = {}
    for key in [*TARGETS, "bridge_cpu_ratio_vs_robot"]:
        values = [r[key] for r in runs if r.get(key) is not None]
        if not values:
            out[key] = None
            continue
        worst = min(values) if key in HIGHER_IS_BETTER else max(values)
        out[key] = statistics.median(values)
        out[f"{key}_worst"] = worst
        out[f"{key}_runs"] = values
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--mode", choices=("platform", "engine"), default="platform")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny loads: a smoke run")
    parser.add_argument("--steps", help="the ladder, e.g. 50,100,150")
    parser.add_argument(
        "--rate", type=float, help="calls/s: placing a ladder step (20), or engine mode's (6)"
    )
    parser.add_argument("--baseline-calls", type=int, default=50)
    parser.add_argument("--media-relay", choices=("own", "rtpengine"), default="own")
    parser.add_argument("--keep", type=Path, help="keep each repeat's sipp screens and logs here")
    parser.add_argument(
        "--profile-sip",
        type=Path,
        help="cProfile every thread of `hotline sip` (CPU clock) into this file; the hot "
        "spots go in the output (slows the SIP process: its figures are not the bench's)",
    )
    # engine mode (the sketch): calls, rate, agents, hold
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--agents", type=int, default=30)
    parser.add_argument("--hold-ms", type=int, default=4000)
    parser.add_argument("--ring-timeout-s", type=float, default=10.0)
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C: `hotline sip` runs in a session of its own and would
    # outlive the benchmark otherwise
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result: dict[str, Any] = {"machine": common.machine(), "loadavg_before": os.getloadavg()}
    if args.mode == "engine":
        from bench._acd_engine import run_engine

        result |= run_engine(
            calls=args.calls,
            rate=round(args.rate or 6),
            agents=args.agents,
            hold_ms=args.hold_ms,
            ring_timeout_s=args.ring_timeout_s,
        )
    else:
        ladder: tuple[int, ...] = QUICK_LADDER if args.quick else LADDER
        if args.steps:
            ladder = tuple(int(s) for s in args.steps.split(","))
        load = QUICK_STEADY if args.quick else STEADY
        baseline = min(args.baseline_calls, ladder[0])
        runs = []
        for i in range(args.repeat):
            common.say(f"repeat {i + 1}/{args.repeat} (load average {os.getloadavg()})")
            runs.append(
                platform_run(
                    db=args.db,
                    ladder=ladder,
                    load=load,
                    rate=args.rate or 20.0,
                    baseline_calls=baseline,
                    keep=args.keep,
                    media_relay=args.media_relay,
                    profile=args.profile_sip.resolve() if args.profile_sip else None,
                )
            )
        result["runs"] = runs
        result |= summarise(runs) if args.repeat > 1 else figures(runs[0])
    result["loadavg_after"] = os.getloadavg()
    result["targets"] = common.verdicts(result, TARGETS)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        for key, value in result.items():
            if key != "runs":
                print(f"{key}: {value}")


if __name__ == "__main__":
    main()
