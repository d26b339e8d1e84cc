"""How many phone calls does one SIP process carry, and how much live speech recognition?

sipp places real calls on loopback to `hotline sip` running as a child process (the
production composition: SipEdge + the platform's FlowHooks, a fresh database, demo data and
a Korean rule); sipp's own RTP (`rtp_stream`) speaks espeak-ng Korean in G.711 μ-law after
the greeting and hangs up. Five figures, each against its target from the issue:

  max_concurrent_good      the most concurrent calls (stepped) in one process with every
                           call's recording matching what was sent (best-lag normalised
                           cross-correlation > 0.99) and no answered call without its
                           ticket; the platform's default live-ASR limit    target >= 50
  live_asr_capacity_ratio  concurrent calls the platform transcribes live within the lag
                           bound (BYE -> transcript attached <= live_lag_s) / real-time
                           streams raw Vosk decodes within the same bound, same cores,
                           same audio, same run, both warmed alike on other speech and
                           stepped alike (4, 8, 12, then by 2)              target >= 0.8
  setup_cps_ok             the highest stepped sipp call rate (INVITE, 200, ACK, a 1 s
                           call, BYE) with every call successful           target >= 20/s
  answer_delay_ms_p50      INVITE sent -> 200 received (sipp rtd) at 20 calls/s, the
                           target rate (the highest passing rate below it if it failed)
                                                                      target <= 100 ms
  transcript_lag_ms_p95    BYE received -> live transcript attached to the ticket (the
                           ticket event's time), calls within live capacity
                                                                     target <= 2000 ms

    python bench/calls.py            # readable figures (~25 minutes on 2 cores)
    python bench/calls.py --json     # one JSON object on stdout
    python bench/calls.py --quick    # fewer, shorter steps (~3 minutes)
    python bench/calls.py --sqlite   # the embedded default's SQLite instead of PostgreSQL
    python bench/calls.py --part asr # only the live-ASR comparison (~15 minutes)

Progress goes to stderr. Only loopback is used; every step is bounded (calls, sipp
timeouts, waits) and the child processes and temp files go away on exit, Ctrl-C included.

This file is the program (plans, the run, the figures, the report); its pieces are in
bench/_call_audio.py (the callers' audio), bench/_call_platform.py (`hotline sip` as a
child), bench/_sipp.py (sipp runs and what the platform recorded of them) and
bench/_call_steps.py (one step of each kind, and the live-ASR comparison).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# tests.speech (espeak-ng speech, G.711) and tests.services (PostgreSQL) are not installed.
sys.path.insert(0, str(ROOT))

from bench import _common as common
from bench._call_audio import RATE, caller_audio, warmup_audio
from bench._call_platform import logs, platform, seed
from bench._call_steps import (
    GOOD_CORRELATION,
    LAG_BOUND_S,
    SETUP_HOLD_MS,
    Plan,
    concurrency_step,
    largest,
    live_asr_steps,
    ms,
    setup_step,
)
from bench._sipp import speak_scenario
from bench.asr import new_recognizer
from hotline.calls.setup import decode_threads as platform_decode_threads
from telephony.prompts import BEEP, PromptSet
from tests.speech import deterministic_vosk_model

PARTS = frozenset({"calls", "asr"})  # calls: concurrency and setup; asr: live ASR vs raw Vosk
TARGETS = {
    "max_concurrent_good": (">=", 50),
    "live_asr_capacity_ratio": (">=", 0.8),
    "setup_cps_ok": (">=", 20),
    "answer_delay_ms_p50": ("<=", 100),
    "transcript_lag_ms_p95": ("<=", 2000),
}


FULL = Plan(
    concurrency=(10, 25, 50, 75, 100, 150, 200),
    ramp_cps=20,
    concurrency_sentences=2,
    setup_rates=(10, 20, 30, 40, 60, 80),
    setup_seconds=6,
    asr_streams=(4, 8, 12, 14, 16, 18, 20, 22, 24, 28, 32),
    asr_sentences=8,
    asr_start_spread_s=1.0,
)
# Every call waits out the platform's greeting (~10 s), which sets the floor of a step.
QUICK = Plan(
    concurrency=(10, 50),
    ramp_cps=20,
    concurrency_sentences=1,
    setup_rates=(10, 20, 40),
    setup_seconds=3,
    asr_streams=(4, 8, 12, 16),
    asr_sentences=2,
    asr_start_spread_s=1.0,
)


# ---------------------------------------------------------------- the run


@contextmanager
def database(use_sqlite: bool) -> Iterator[tuple[str, str]]:
    if use_sqlite:
        with common.sqlite_database() as url:
            yield url, "sqlite"
    else:
        with common.postgres_database("hotline_bench_calls") as url:
            engine, _ = common.session_factory(url)
            try:
                version = common.postgres_version(engine)
            finally:
                engine.dispose()
            yield url, f"postgresql {version}"


def run(
    plan: Plan,
    *,
    use_sqlite: bool,
    parts: frozenset[str] = PARTS,
    decode_processes: int | None = None,
    decode_threads: int | None = None,
) -> dict[str, Any]:
    from asr.vosk_engine import load_model

    result: dict[str, Any] = {
        "machine": common.machine(),
        "quick": plan == QUICK,
        "parts": sorted(parts),
    }
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hotline-calls-")))
        cache = Path(tempfile.gettempdir()) / f"hotline-bench-calls-{os.getuid()}"
        cache.mkdir(mode=0o700, exist_ok=True)
        common.say("prompts and the deterministic Vosk model ...")
        prompts = PromptSet(cache / "prompts")
        prompts.ensure()
        greeting_s = len(prompts.compose(["greeting", BEEP])) / 2 / RATE
        model_dir = deterministic_vosk_model(cache)
        # The greeting plays after the ticket is written; under load that takes a while.
        lead_s = round(greeting_s + 1.5, 2)
        common.say("synthesising the callers' speech ...")
        conc_audio = caller_audio(
            workdir, "concurrency", lead_s=lead_s, sentences=plan.concurrency_sentences
        )
        asr_audio = caller_audio(workdir, "asr", lead_s=lead_s, sentences=plan.asr_sentences)
        # Both sides warm on what a caller's line carries after the greeting (silence,
        # the speech, the tail), the audio they then decode (live_asr_steps).
        listening = asr_audio.pcm[round(greeting_s * RATE) * 2 :]
        warm_path, warm_pcm = warmup_audio(workdir, listening if "asr" in parts else None)
        result["audio"] = {
            "greeting_and_beep_s": round(greeting_s, 2),
            "lead_silence_s": lead_s,
            "concurrency_call_s": round(conc_audio.seconds, 2),
            "asr_call_s": round(asr_audio.seconds, 2),
            "asr_speech_s": round(len(asr_audio.speech_pcm) / 2 / RATE, 2),
            "warmup_s": round(len(warm_pcm) / 2 / RATE, 2),
            "codec": "PCMU via sipp rtp_stream",
        }

        common.say("raw Vosk: loading the model ...")
        model = load_model(model_dir)
        probe = new_recognizer(model)
        probe.AcceptWaveform(asr_audio.speech_pcm)
        heard = json.loads(probe.FinalResult())["text"].split()
        rule_words = sorted({w for w in heard if len(w) >= 2 and w.isalpha()})
        del probe

        url, backend = stack.enter_context(database(use_sqlite))
        result["database"] = backend
        result["seed"] = seed(url, rule_words)

        if "calls" in parts:
            # 1. the platform as deployed (default live-ASR limit: one stream per CPU)
            max_calls = max(plan.concurrency) + 20
            common.say(f"starting hotline sip (default ASR limits, max_calls {max_calls}) ...")
            with platform(
                name="default",
                url=url,
                workdir=workdir,
                prompts_dir=cache / "prompts",
                model=model_dir,
                extra_env={"HOTLINE_TELEPHONY__MAX_CALLS": str(max_calls)},
            ) as p:
                result["platform_rss_mb_idle"] = p.rss_mb()
                scenario = speak_scenario(conc_audio, workdir)
                conc_steps = []
                for calls in plan.concurrency:
                    common.say(f"concurrency: {calls} calls at once ...")
                    step = concurrency_step(p, url, conc_audio, scenario, calls, plan, workdir)
                    common.say(
                        f"  good={step['good']} corr min {step['correlation']['min']} "
                        f"lost {step['lost_tickets']} peak {step['peak_concurrent']} "
                        f"cpu {step['platform_cpu_pct']} %"
                    )
                    conc_steps.append(step)
                    if not step["good"]:
                        break
                setup_steps = []
                for rate in plan.setup_rates:
                    common.say(f"call setup: {rate} calls/s ...")
                    step = setup_step(p, url, rate, plan, workdir)
                    common.say(
                        f"  ok={step['ok']} answer p50 "
                        f"{(step['answer_delay_ms'] or {}).get('p50')} ms"
                    )
                    setup_steps.append(step)
                    if not step["ok"]:
                        break
                result["platform_rss_mb_after"] = p.rss_mb()
            add_call_figures(result, conc_steps, setup_steps)

        if "asr" in parts:
            # 2. live ASR: the platform allowed as many live streams as the steps need.
            top = max(plan.asr_streams)
            common.say(
                f"starting hotline sip (live ASR up to {top} streams, warming {top} "
                "recognizers) ..."
            )
            with platform(
                name="asr",
                url=url,
                workdir=workdir,
                prompts_dir=cache / "prompts",
                model=model_dir,
                warmed=True,
                extra_env={
                    "HOTLINE_ASR__MAX_LIVE_STREAMS": str(top),
                    "HOTLINE_ASR__POOL_SIZE": str(top),
                    "HOTLINE_ASR__WARM_RECOGNIZERS": str(top),
                    "HOTLINE_ASR__WARMUP_AUDIO": str(warm_path),
                    **(
                        {}
                        if decode_processes is None
                        else {"HOTLINE_ASR__DECODE_PROCESSES": str(decode_processes)}
                    ),
                    **(
                        {}
                        if decode_threads is None
                        else {"HOTLINE_ASR__DECODE_THREADS": str(decode_threads)}
                    ),
                },
            ) as p:
                result["decode_processes"] = len(p.pids()) - 1
                result["decode_threads"] = platform_decode_threads(
                    decode_threads, result["decode_processes"]
                )
                raw_steps, asr_steps = live_asr_steps(
                    p, url, model, asr_audio, warm_pcm, plan, workdir
                )
            result["raw_heard"] = " ".join(heard)
            add_asr_figures(result, raw_steps, asr_steps)

    result["platform_logs"] = dict(logs)
    result["targets"] = common.verdicts(result, {k: v for k, v in TARGETS.items() if k in result})
    result["note"] = (
        "shared machine (other engineers' tests run on the same cores); sipp, "
        "the benchmark and the database share the cores with the platform"
    )
    return result


def add_call_figures(
    result: dict[str, Any], conc_steps: list[dict[str, Any]], setup_steps: list[dict[str, Any]]
) -> None:
    result["concurrency"] = {
        "steps": conc_steps,
        "ramp_cps": FULL.ramp_cps,
        "correlation_bound": GOOD_CORRELATION,
    }
    result["max_concurrent_good"] = largest(conc_steps, "calls", "good")

    setup_ok = largest(setup_steps, "rate", "ok")
    result["setup_cps_ok"] = setup_ok

    def delay_p50(rate: float) -> float | None:
        delays: list[float] = next(
            (s["answer_delays_s"] for s in setup_steps if s["rate"] == rate), []
        )
        return ms(statistics.median(delays)) if delays else None

    # At the rate the issue asks for (or the highest that passed, when it was not reached),
    # and at the highest rate that passed.
    target_rate = TARGETS["setup_cps_ok"][1]
    result["answer_delay_ms_p50"] = delay_p50(min(target_rate, setup_ok) or setup_steps[0]["rate"])
    result["answer_delay_rate"] = min(target_rate, setup_ok) or setup_steps[0]["rate"]
    result["answer_delay_ms_p50_at_setup_cps_ok"] = delay_p50(setup_ok)
    # sipp retransmits an unanswered INVITE and waits, so a rate can pass with seconds of
    # answer delay: the highest passing rate still answering within the target as well.
    bound = TARGETS["answer_delay_ms_p50"][1]
    result["setup_cps_answer_within_target"] = max(
        (
            s["rate"]
            for s in setup_steps
            if s["rate"] <= setup_ok and (delay_p50(s["rate"]) or 0) <= bound
        ),
        default=0,
    )
    for step in setup_steps:
        step.pop("answer_delays_s")
    result["setup"] = {"steps": setup_steps, "hold_ms": SETUP_HOLD_MS}


def add_asr_figures(
    result: dict[str, Any], raw_steps: list[dict[str, Any]], asr_steps: list[dict[str, Any]]
) -> None:
    raw_capacity = largest(raw_steps, "streams", "all_sustained")
    result["raw_vosk"] = {
        "steps": raw_steps,
        "realtime_streams": raw_capacity,
        "heard": result.pop("raw_heard"),
        "capped": bool(raw_steps[-1]["all_sustained"]),
    }
    platform_capacity = largest(asr_steps, "streams", "all_sustained")
    lags = [lag for s in asr_steps if s["all_sustained"] for lag in s["transcript_lags_s"]]
    for step in asr_steps:
        step.pop("transcript_lags_s")
    result["live_asr"] = {
        "platform_steps": asr_steps,
        "platform_streams": platform_capacity,
        "platform_capped": bool(asr_steps[-1]["all_sustained"]),
        "raw_vosk_streams": raw_capacity,
        "lag_bound_s": LAG_BOUND_S,
        "default_max_live_streams": os.cpu_count(),
    }
    result["live_asr_capacity_ratio"] = (
        round(platform_capacity / raw_capacity, 2) if raw_capacity else None
    )
    result["transcript_lag_ms_p95"] = ms(common.percentile(lags, 95)) if lags else None


def human(result: dict[str, Any]) -> str:
    m, a = result["machine"], result["audio"]
    out = [
        f"machine: {m['nproc']} x {m['cpu_model']}, Python {m['python']}; "
        f"database {result['database']}",
        f"callers: greeting+beep {a['greeting_and_beep_s']} s, then speech; concurrency "
        f"calls {a['concurrency_call_s']} s, ASR calls {a['asr_call_s']} s "
        f"({a['asr_speech_s']} s of speech; recognizers warmed on "
        f"{a['warmup_speech_s']} s of other speech)",
    ]
    if "concurrency" in result:
        out += [
            "",
            f"concurrent calls (ramp {result['concurrency']['ramp_cps']} calls/s; good = "
            f"every recording correlation > {GOOD_CORRELATION} and no lost ticket):",
        ]
        for s in result["concurrency"]["steps"]:
            delay = s["answer_delay_ms"] or {}
            out.append(
                f"  {s['calls']:4} calls  {'good' if s['good'] else 'NOT GOOD':8}  "
                f"peak {s['peak_concurrent']:3}  answered {s['answered']:3}  lost "
                f"tickets {s['lost_tickets']}  corr min {s['correlation']['min']} "
                f"(<= 0.99: {s['correlation']['below_0_99']})  answer p50 "
                f"{delay.get('p50')} ms  platform CPU {s['platform_cpu_pct']} %  "
                f"transcripts {s['transcripts']}"
            )
        out += ["", f"call setup (hold {result['setup']['hold_ms']} ms):"]
        for s in result["setup"]["steps"]:
            delay = s["answer_delay_ms"] or {}
            out.append(
                f"  {s['rate']:4} calls/s  {s['calls']:4} calls  "
                f"{'all ok' if s['ok'] else 'FAILURES':8}  answered {s['answered']}  "
                f"answer p50 {delay.get('p50')} ms p95 {delay.get('p95')} ms  "
                f"platform CPU {s['platform_cpu_pct']} %"
            )
        out.append(
            f"answer delay p50 at {result['answer_delay_rate']} calls/s: "
            f"{result['answer_delay_ms_p50']} ms; at {result['setup_cps_ok']} calls/s: "
            f"{result['answer_delay_ms_p50_at_setup_cps_ok']} ms (sipp rtd, ms "
            f"resolution); highest passing rate with p50 <= 100 ms: "
            f"{result['setup_cps_answer_within_target']} calls/s"
        )
    if "live_asr" in result:
        live = result["live_asr"]
        out += [
            "",
            f"live ASR (sustained = final transcript within {live['lag_bound_s']} s of "
            "the audio's end):",
            "  raw Vosk, threads decoding real-time audio:",
        ]
        for s in result["raw_vosk"]["steps"]:
            out.append(
                f"    {s['streams']:3} streams  sustained {s['sustained']:3}  final lag "
                f"p95 {(s['final_lag_ms'] or {}).get('p95')} ms  CPU "
                f"{s['cpu_pct']} %"
            )
        out.append("  platform, live-transcribed calls (BYE -> transcript on the ticket):")
        for s in live["platform_steps"]:
            out.append(
                f"    {s['streams']:3} calls    sustained {s['sustained']:3}  lag p95 "
                f"{(s['transcript_lag_ms'] or {}).get('p95')} ms  dispatched "
                f"{s['dispatched']}  {s['transcripts']}  CPU {s['platform_cpu_pct']} %"
            )
        capped = (
            " (a capped figure reached the top step: it is a lower bound)"
            if (live["platform_capped"] or result["raw_vosk"]["capped"])
            else ""
        )
        out.append(
            f"  platform {live['platform_streams']} / raw {live['raw_vosk_streams']} "
            f"streams{capped} (the platform's default limit is "
            f"{live['default_max_live_streams']}, one per CPU)"
        )
    for name, seen in result["platform_logs"].items():
        out.append(
            f"platform '{name}' logged {seen['lines']} warning/error line(s), "
            f"{seen['tracebacks']} traceback(s)"
            + "".join(f"\n    {n} x {text}" for text, n in seen["most_common"][:4])
        )
    out += ["", "targets:"]
    for key, v in result["targets"].items():
        verdict = {True: "met", False: "MISSED", None: "n/a"}[v["met"]]
        out.append(f"  {key:25} {v['value']!s:>8}  target {v['target']:8}  {verdict}")
    out += ["", result["note"]]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="smaller steps (~2 minutes)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument(
        "--part",
        choices=["all", *sorted(PARTS)],
        default="all",
        help="calls: concurrency and call setup only; asr: live ASR only",
    )
    parser.add_argument(
        "--decode-processes",
        type=int,
        metavar="N",
        help="HOTLINE_ASR__DECODE_PROCESSES for the live-ASR platform "
        "(default: the platform's own; 0: threads of the SIP process)",
    )
    parser.add_argument(
        "--decode-threads",
        type=int,
        metavar="N",
        help="HOTLINE_ASR__DECODE_THREADS (decoder threads in each decoder "
        "process) for the live-ASR platform",
    )
    parser.add_argument(
        "--asr-steps",
        metavar="N,N,...",
        help="live-ASR steps instead of the plan's (e.g. 12,14,16)",
    )
    parser.add_argument(
        "--concurrency-steps",
        metavar="N,N,...",
        help="calls-at-once steps instead of the plan's (e.g. 100,150)",
    )
    parser.add_argument(
        "--setup-rates",
        metavar="N,N,...",
        help="call setup rates (calls/s) instead of the plan's (e.g. 20,80)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL

    def steps(option: str, value: str, top: int) -> tuple[int, ...]:
        try:
            numbers = tuple(sorted({int(n) for n in value.split(",")}))
        except ValueError:
            parser.error(f"{option} takes whole numbers, got {value!r}")
        if not numbers or numbers[0] < 1 or numbers[-1] > top:
            parser.error(f"{option} takes numbers from 1 to {top}")
        return numbers

    if args.asr_steps:
        plan = dataclasses.replace(plan, asr_streams=steps("--asr-steps", args.asr_steps, 64))
    if args.concurrency_steps:
        plan = dataclasses.replace(
            plan, concurrency=steps("--concurrency-steps", args.concurrency_steps, 400)
        )
    if args.setup_rates:
        plan = dataclasses.replace(plan, setup_rates=steps("--setup-rates", args.setup_rates, 200))
    # SIGTERM unwinds like Ctrl-C, so the child processes and temp files are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(
        plan,
        use_sqlite=args.sqlite,
        parts=PARTS if args.part == "all" else frozenset({args.part}),
        decode_processes=args.decode_processes,
        decode_threads=args.decode_threads,
    )
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(human(result))


if __name__ == "__main__":
    main()
