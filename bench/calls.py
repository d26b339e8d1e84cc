"""How many phone calls does one SIP process carry, and how much live speech recognition?

sipp places real calls on loopback to `hotline sip` running as a child process (the
production composition: SipEdge + the platform's FlowHooks, a fresh database, demo data and
a Korean rule); sipp's own RTP (`rtp_stream`) speaks espeak-ng Korean in G.711 μ-law after
the greeting and hangs up. The figures, each against its target (issue 15 §6):

  max_concurrent_good      the most concurrent calls (stepped: 10 ... 200, 300, 400, 500,
                           600, 800 until a step fails) in one process with every call's
                           recording matching what was sent (best-lag normalised
                           cross-correlation > 0.99) and no answered call without its
                           ticket; the platform's default live-ASR limit   target >= 500
                           (`concurrency_failed_at`: the first step that failed, and
                           `concurrency_failed_step`: whose CPU ran out there)
  live_asr_capacity_ratio_min, _median, _runs
                           concurrent calls the platform transcribes live within the lag
                           bounds (BYE -> transcript attached: every call <= live_lag_s,
                           2 s, and the step's p95 <= 1 s, the lag target) / real-time
                           streams raw Vosk decodes within the same bounds, same cores,
                           same audio, same run, both warmed alike and stepped alike;
                           the comparison repeated `--asr-repeats` times (3), alternating
                           which side meets each step first; a step either side misses
                           is run once more and the second try counts (`first_try`);
                           raw Vosk reads a partial after every 20 ms frame, the baseline
                           the target was set on (`--raw-partials batch`: once per the
                           platform's live batch, as the platform reads since 2026-12-06)
                                                               target: min >= 0.95
                           (`live_asr_capacity_ratio`: the median, the old key)
  setup_cps_ok             the highest stepped sipp call rate (INVITE, 200, ACK, a 1 s
                           call, BYE; 10 ... 80, 120, 160, 200, 250, 300, 400 until one
                           fails) with every call successful              target >= 200/s
  answer_delay_ms_p50_at_200cps
                           INVITE sent -> 200 received (sipp rtd), median at 200 calls/s
                                                                       target <= 20 ms
  answer_delay_ms_p50      the same at 20 calls/s (the old key)       target <= 100 ms
  transcript_lag_ms_p95_at_capacity
                           BYE received -> live transcript attached to the ticket (the
                           ticket event's time), p95 at the top sustained step (and
                           `transcript_lag_ms_p95`: over every sustained step)
                                                                      target <= 1000 ms

    python bench/calls.py            # readable figures (~40 minutes on 2 cores)
    python bench/calls.py --json     # one JSON object on stdout
    python bench/calls.py --quick    # fewer, shorter steps (~3 minutes)
    python bench/calls.py --sqlite   # the embedded default's SQLite instead of PostgreSQL
    python bench/calls.py --part asr # only the live-ASR comparison (~25 minutes)
    python bench/calls.py --part calls --profile-sip sip.pstats   # cProfile, every thread

A failed step names its worst calls (`worst_call_ids`); with HOTLINE_BENCH_KEEP_LOGS=DIR the
SIP process's whole log is kept there, to read those calls' story.

Progress goes to stderr. Only loopback is used; every step is bounded (calls, sipp
timeouts, waits) and the child processes and temp files go away on exit, Ctrl-C included.

This file is the program (plans, the run, the figures, the report); its pieces are in
bench/_call_audio.py (the callers' audio), bench/_call_platform.py (`hotline sip` as a
child, its CPU by thread), bench/_sipp.py (sipp runs and what the platform recorded of them)
and bench/_call_steps.py (one step of each kind, and the live-ASR comparison).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# tests.speech (espeak-ng speech, G.711) and tests.services (PostgreSQL) are not installed.
sys.path.insert(0, str(ROOT))

from asr.recognizer import FRAME_MS
from bench import _common as common
from bench._call_audio import RATE, caller_audio, warmup_audio
from bench._call_figures import TARGETS, add_asr_figures, add_call_figures, human
from bench._call_platform import logs, platform, seed
from bench._call_steps import (
    AsrComparison,
    Plan,
    concurrency_step,
    largest,
    repeat_steps,
    setup_step,
)
from bench._sipp import speak_scenario
from bench.asr import new_recognizer
from core.settings import AsrSettings
from hotline.calls.setup import decode_slots as platform_decode_slots
from hotline.calls.setup import decode_threads as platform_decode_threads
from telephony.prompts import BEEP, PromptSet
from tests.speech import deterministic_vosk_model

PARTS = frozenset({"calls", "asr"})  # calls: concurrency and setup; asr: live ASR vs raw Vosk


# The ladders go on until a step fails (each stops at its first failure; the tops are the
# bound): concurrency to 800 calls at once, setup to 400 calls/s.
FULL = Plan(
    concurrency=(10, 25, 50, 75, 100, 150, 200, 300, 400, 500, 600, 800),
    ramp_cps=20,
    ramp_s=10.0,
    concurrency_sentences=2,
    setup_rates=(10, 20, 30, 40, 60, 80, 120, 160, 200, 250, 300, 400),
    setup_seconds=6,
    asr_streams=(4, 8, 12, 14, 16, 18, 20, 22, 24, 28, 32),
    asr_sentences=8,
    asr_start_spread_s=1.0,
)
# Every call waits out the platform's greeting (~10 s), which sets the floor of a step.
QUICK = Plan(
    concurrency=(10, 50),
    ramp_cps=20,
    ramp_s=10.0,
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
    profile_sip: Path | None = None,
    asr_repeats: int = 1,
    raw_partials: str = "frame",
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
            # Room for every call of a setup step that overlaps (answer delay + the 1 s call):
            # the edge's own 503 beyond max_calls must not be what fails a rate.
            max_calls = max(max(plan.concurrency), 4 * max(plan.setup_rates)) + 20
            common.say(f"starting hotline sip (default ASR limits, max_calls {max_calls}) ...")
            with platform(
                name="default",
                url=url,
                workdir=workdir,
                prompts_dir=cache / "prompts",
                model=model_dir,
                extra_env={"HOTLINE_TELEPHONY__MAX_CALLS": str(max_calls)},
                profile=profile_sip,
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
                        f"cpu: SIP {step['sip_process_cpu_pct']} % sipp "
                        f"{step['sipp_cpu_pct']} % machine {step['machine_cpu_pct']} %; "
                        f"threads {step['sip_threads_cpu_s']}"
                    )
                    conc_steps.append(step)
                    if not step["good"]:
                        break
                setup_steps = []
                for rate in plan.setup_rates:
                    common.say(f"call setup: {rate} calls/s ...")
                    step = setup_step(p, url, rate, plan, workdir)
                    common.say(
                        f"  ok={step['ok']} answered {step['answered']}/{step['calls']} "
                        f"answer p50 {(step['answer_delay_ms'] or {}).get('p50')} ms; cpu: "
                        f"SIP {step['sip_process_cpu_pct']} % sipp {step['sipp_cpu_pct']} %; "
                        f"threads {step['sip_threads_cpu_s']}"
                    )
                    setup_steps.append(step)
                    if not step["ok"]:
                        break
                result["platform_rss_mb_after"] = p.rss_mb()
            add_call_figures(result, conc_steps, setup_steps, plan.ramp_cps)

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
                # The SIP process, then (when it decodes in children) the zygote and them.
                result["decode_processes"] = max(0, len(p.pids()) - 2)
                if result["decode_processes"]:
                    result["decode_threads"] = platform_decode_threads(
                        decode_threads, result["decode_processes"]
                    )
                else:  # the SIP process's own threads, `decode_slots` of them at once
                    result["decode_slots"] = platform_decode_slots(None)
                # The platform's live batch (as passed to it, or its default), in frames: its
                # partial cadence.
                batch_s = float(
                    os.environ.get("HOTLINE_ASR__LIVE_BATCH_S", AsrSettings().live_batch_s)
                )
                batch_frames = max(1, round(batch_s * 1000 / FRAME_MS))
                result["raw_partials"] = raw_partials
                comparison = AsrComparison(
                    p,
                    url,
                    model,
                    asr_audio,
                    warm_pcm,
                    plan,
                    workdir,
                    raw_partial_every=batch_frames if raw_partials == "batch" else 1,
                )
                repeats: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
                steps = plan.asr_streams
                for n in range(asr_repeats):
                    # Alternate which side meets each step first: a side that always runs
                    # a minute later meets a different machine (other people's work).
                    raw_first = n % 2 == 1
                    common.say(
                        f"live-ASR comparison {n + 1}/{asr_repeats} "
                        f"({'raw Vosk' if raw_first else 'platform'} first), steps {steps}"
                    )
                    raw_steps, asr_steps = comparison.run(steps, raw_first=raw_first, tag=f"-{n}")
                    repeats.append((raw_steps, asr_steps))
                    caps = [
                        largest(raw_steps, "streams", "all_sustained"),
                        largest(asr_steps, "streams", "all_sustained"),
                    ]
                    common.say(f"  platform {caps[1]} / raw Vosk {caps[0]}")
                    steps = repeat_steps(plan.asr_streams, caps)
            result["raw_heard"] = " ".join(heard)
            add_asr_figures(result, repeats)

    result["platform_logs"] = dict(logs)
    result["targets"] = common.verdicts(result, {k: v for k, v in TARGETS.items() if k in result})
    result["note"] = (
        "shared machine (other engineers' tests run on the same cores); sipp, "
        "the benchmark and the database share the cores with the platform"
    )
    return result


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
        "--profile-sip",
        metavar="FILE",
        type=Path,
        help="cProfile every thread of the calls part's `hotline sip` on its CPU clock and "
        "write the stats (pstats) to FILE when it stops",
    )
    parser.add_argument(
        "--asr-repeats",
        type=int,
        default=3,
        metavar="N",
        help="repeat the live-ASR comparison N times in this run (min and median printed; "
        "default 3)",
    )
    parser.add_argument(
        "--raw-partials",
        choices=["frame", "batch"],
        default="frame",
        help="raw Vosk reads its partial after every 20 ms frame (the baseline the target "
        "was set on) or once per the platform's live batch, as the platform does",
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
            plan, concurrency=steps("--concurrency-steps", args.concurrency_steps, 2000)
        )
    if args.setup_rates:
        plan = dataclasses.replace(plan, setup_rates=steps("--setup-rates", args.setup_rates, 1000))
    # SIGTERM unwinds like Ctrl-C, so the child processes and temp files are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(
        plan,
        use_sqlite=args.sqlite,
        parts=PARTS if args.part == "all" else frozenset({args.part}),
        decode_processes=args.decode_processes,
        decode_threads=args.decode_threads,
        profile_sip=args.profile_sip.resolve() if args.profile_sip else None,
        asr_repeats=max(1, args.asr_repeats),
        raw_partials=args.raw_partials,
    )
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(human(result))


if __name__ == "__main__":
    main()
