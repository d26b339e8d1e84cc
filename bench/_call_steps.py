"""bench/calls.py's steps: one concurrency step, one call-setup rate, one live-ASR step on the
platform and the same on raw Vosk, and the live-ASR comparison that interleaves the two."""

from __future__ import annotations

import resource
import statistics
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import _common as common
from bench._call_audio import FRAME, RATE, Audio, correlation, warm, wav_samples
from bench._call_platform import Platform
from bench._sipp import SCENARIOS, outcomes, peak_concurrent, run_sipp, settled, speak_scenario
from bench.asr import new_recognizer
from telephony.models import TranscribedBy
from tests.speech import read_wav
from tickets.models import Status

GOOD_CORRELATION = 0.99
LAG_BOUND_S = 2.0  # AsrSettings.live_lag_s, the platform's own bound for a live transcript
SETUP_HOLD_MS = 1000


@dataclass(frozen=True)
class Plan:
    concurrency: tuple[int, ...]  # calls at once, stepped up until a step is not good
    ramp_cps: int  # how fast sipp places a concurrency step's calls
    concurrency_sentences: int  # what each caller says there (bench/asr.py's, in turn)
    setup_rates: tuple[int, ...]  # calls/s, stepped up until one call fails
    setup_seconds: int  # calls placed per rate step: rate x this
    asr_streams: tuple[int, ...]  # live-ASR steps (platform and raw Vosk alike)
    asr_sentences: int  # a stream that falls behind shows more on longer speech
    asr_start_spread_s: float  # the calls of an ASR step start within this


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def quantiles_ms(values_s: Sequence[float]) -> dict[str, Any] | None:
    return common.summary_ms(values_s) if values_s else None


def concurrency_step(
    p: Platform, url: str, audio: Audio, scenario: Path, calls: int, plan: Plan, workdir: Path
) -> dict[str, Any]:
    hold_ms = int(audio.seconds * 1000) + 100
    timeout = calls / plan.ramp_cps + audio.seconds + 30
    cpu0, t0 = p.cpu(), time.perf_counter()
    run = run_sipp(
        scenario,
        target=p.target,
        calls=calls,
        rate=plan.ramp_cps,
        hold_ms=hold_ms,
        workdir=workdir / f"conc-{calls}",
        timeout_s=timeout,
    )
    cpu, wall = p.cpu() - cpu0, time.perf_counter() - t0  # while sipp ran
    seen = settled(url, run.pid, calls, timeout_s=60)
    sent = np.frombuffer(audio.pcm, dtype="<i2").astype(np.float64)
    correlations = [correlation(sent, wav_samples(c.recording_path)) for c in seen if c.answered]
    answered = sum(c.answered for c in seen)
    lost = sum(c.answered and not c.ticket for c in seen)
    bad = sum(x <= GOOD_CORRELATION for x in correlations)
    good = (
        run.returncode == 0
        and len(seen) == calls
        and answered == calls
        and lost == 0
        and len(correlations) == calls
        and bad == 0
    )
    return {
        "calls": calls,
        "good": good,
        "sipp_ok": run.returncode == 0,
        "records": len(seen),
        "answered": answered,
        "lost_tickets": lost,
        "peak_concurrent": peak_concurrent(seen),
        "correlation": {
            "min": round(min(correlations), 5) if correlations else None,
            "median": round(statistics.median(correlations), 5) if correlations else None,
            "below_0_99": bad,
        },
        "transcripts": outcomes(seen),
        "answer_delay_ms": quantiles_ms(run.answer_delays_s),
        "platform_cpu_s": round(cpu, 1),
        "platform_cpu_pct": round(100 * cpu / wall, 1),
        "sipp_wall_s": round(run.wall_s, 1),
        **({} if run.returncode == 0 else {"sipp_tail": run.output[-600:]}),
    }


def setup_step(p: Platform, url: str, rate: int, plan: Plan, workdir: Path) -> dict[str, Any]:
    calls = rate * plan.setup_seconds
    cpu0, t0 = p.cpu(), time.perf_counter()
    run = run_sipp(
        SCENARIOS / "uac_setup.xml",
        target=p.target,
        calls=calls,
        rate=rate,
        hold_ms=SETUP_HOLD_MS,
        workdir=workdir / f"setup-{rate}",
        timeout_s=plan.setup_seconds + 30,
    )
    cpu, wall = p.cpu() - cpu0, time.perf_counter() - t0  # while sipp ran
    seen = settled(url, run.pid, calls, timeout_s=60)
    lost = sum(c.answered and not c.ticket for c in seen)
    answered = sum(c.answered for c in seen)
    ok = run.returncode == 0 and answered == calls and lost == 0
    return {
        "rate": rate,
        "calls": calls,
        "ok": ok,
        "sipp_ok": run.returncode == 0,
        "answered": answered,
        "lost_tickets": lost,
        "answer_delay_ms": quantiles_ms(run.answer_delays_s),
        "answer_delays_s": run.answer_delays_s,
        "platform_cpu_pct": round(100 * cpu / wall, 1),
        "wall_s": round(wall, 1),
        **({} if run.returncode == 0 else {"sipp_tail": run.output[-600:]}),
    }


def platform_asr_step(
    p: Platform, url: str, audio: Audio, scenario: Path, streams: int, plan: Plan, workdir: Path
) -> dict[str, Any]:
    rate = max(1, round(streams / plan.asr_start_spread_s))
    hold_ms = int(audio.seconds * 1000) + 100
    (sip0, dec0), t0, machine0 = p.cpu_split(), time.perf_counter(), common.machine_busy()
    sipp0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = run_sipp(
        scenario,
        target=p.target,
        calls=streams,
        rate=rate,
        hold_ms=hold_ms,
        workdir=workdir / f"asr-{streams}",
        timeout_s=audio.seconds + 40,
    )
    sipp1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine = common.machine_cpu_pct(machine0, common.machine_busy())  # while calls last
    seen = settled(url, run.pid, streams, timeout_s=60)
    (sip1, dec1), wall = p.cpu_split(), time.perf_counter() - t0  # until every transcript is in
    sip, dec = sip1 - sip0, dec1 - dec0
    cpu = sip + dec
    sipp_cpu = (sipp1.ru_utime + sipp1.ru_stime) - (sipp0.ru_utime + sipp0.ru_stime)
    lags = [
        c.transcript_lag_s
        for c in seen
        if c.transcribed_by == TranscribedBy.live.value and c.transcript_lag_s is not None
    ]
    sustained = sum(
        1
        for c in seen
        if c.transcribed_by == TranscribedBy.live.value
        and c.transcript_lag_s is not None
        and c.transcript_lag_s <= LAG_BOUND_S
    )
    return {
        "streams": streams,
        "sustained": sustained,
        "all_sustained": run.returncode == 0 and sustained == streams,
        "recordings": sorted(c.recording_path for c in seen if c.recording_path),
        "transcripts": outcomes(seen),
        "ticket_status": dict(Counter(c.ticket_status for c in seen)),
        "distinct_transcripts": Counter(
            c.transcript for c in seen if c.transcript is not None
        ).most_common(3),
        "dispatched": sum(c.ticket_status == Status.dispatched.value for c in seen),
        "lost_tickets": sum(c.answered and not c.ticket for c in seen),
        "transcript_lag_ms": quantiles_ms(lags),
        "transcript_lags_s": lags,
        "platform_cpu_pct": round(100 * cpu / wall, 1),
        "platform_cpu_s": round(cpu, 1),
        "sip_process_cpu_s": round(sip, 1),
        "decoders_cpu_s": round(dec, 1),
        "sipp_cpu_s": round(sipp_cpu, 1),
        "machine_cpu_pct": machine,
        "wall_s": round(wall, 1),
    }


def raw_asr_step(
    model: Any, recognizers: list, pcms: Sequence[bytes], streams: int, spread_s: float
) -> dict[str, Any]:
    """`streams` threads each feed an utterance (stream i: `pcms[i % len(pcms)]`) to its
    own recogniser in real time, 20 ms frames with a partial read after each, as a live
    call does; a stream is sustained when its final result comes within the lag bound of
    its audio's end — the platform's criterion too (how far behind a call's decoder fell on
    the way is not recorded there); `max_behind_ms` says how late the worst frame was
    decoded here."""
    while len(recognizers) < streams:  # as the platform's pool: fresh ones when it is short
        recognizers.append(new_recognizer(model))
    audio = [pcms[i % len(pcms)] for i in range(streams)]
    lags: list[float] = [float("inf")] * streams
    behind: list[float] = [0.0] * streams
    start = time.monotonic() + 0.2

    def work(index: int) -> None:
        rec, pcm = recognizers[index], audio[index]
        began = start + spread_s * index / streams
        worst = 0.0
        for n, i in enumerate(range(0, len(pcm), FRAME)):
            due = began + n * 0.02
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            else:
                worst = max(worst, now - due)
            if not rec.AcceptWaveform(pcm[i : i + FRAME]):
                rec.PartialResult()
        rec.FinalResult()
        lags[index] = time.monotonic() - (began + len(pcm) / 2 / RATE)
        behind[index] = worst

    longest = max(len(pcm) for pcm in audio) / 2 / RATE
    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(streams)]
    cpu0, t0, machine0 = time.process_time(), time.perf_counter(), common.machine_busy()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(longest + 120)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    machine = common.machine_cpu_pct(machine0, common.machine_busy())
    sustained = sum(lag <= LAG_BOUND_S for lag in lags)
    return {
        "streams": streams,
        "sustained": sustained,
        "all_sustained": sustained == streams,
        "distinct_audio": len({hash(pcm) for pcm in audio}),
        "audio_s": round(sum(len(pcm) for pcm in audio) / 2 / RATE / streams, 2),
        "cpu_pct": round(100 * cpu / wall, 1),
        "cpu_s": round(cpu, 1),
        "machine_cpu_pct": machine,
        "wall_s": round(wall, 1),
        "final_lag_ms": quantiles_ms([x for x in lags if x != float("inf")]),
        "max_behind_ms": ms(max(behind)),
    }


# ---------------------------------------------------------------- stepping


def largest(steps: Sequence[dict[str, Any]], key: str, flag: str) -> int:
    """The largest step value reached with every step up to it passing."""
    best = 0
    for step in steps:
        if not step[flag]:
            break
        best = step[key]
    return best


def refine(steps: Sequence[dict[str, Any]], key: str, flag: str) -> int | None:
    """Between the last passing step and the first failing one, when they are more than two
    apart: the step half-way (even), so the figure's resolution is 2 streams, not 4."""
    passed = largest(steps, key, flag)
    failed = next((s[key] for s in steps if not s[flag]), None)
    if failed is None or failed - passed <= 2:
        return None
    return passed + (failed - passed) // 4 * 2


def live_asr_steps(
    p: Platform, url: str, model: Any, audio: Audio, warm_pcm: bytes, plan: Plan, workdir: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The platform and raw Vosk step by step, in the same minutes of a shared machine, on
    the same audio: each platform step first, then raw Vosk decodes that step's recordings
    (what the platform's transcribers were fed: the caller's line from the end of the
    greeting to the BYE). Both start from as many recognizers warmed on the same audio
    (`warm_pcm`, what a caller's line carries) and keep them across the steps.

    Not one utterance replayed: raw Vosk used to decode the callers' speech, the same bytes
    every stream and every step, on recognizers warmed on those very bytes. A recognizer
    composes its share of the lookahead graph lazily and keeps it, so one that decodes
    audio it has decoded before does about half the work; no live call gets that — a few
    milliseconds' difference in when the line starts being heard changes the decoder's
    path from the first frame (10 platform calls, one audio file: 3 to 4 distinct
    transcripts). Isolated, 10 streams with 0-200 ms more leading silence each cost 2.4-2.6 s
    of decoder CPU, 1.65 s with none. Beyond the platform's last step raw Vosk takes that
    step's recordings in turn, each step from the next one on, so that a recogniser
    rarely meets its own last audio again."""
    scenario = speak_scenario(audio, workdir)
    common.say(f"raw Vosk: warming {max(plan.asr_streams)} recognizers ...")
    recognizers = [new_recognizer(model) for _ in range(max(plan.asr_streams))]
    for recognizer in recognizers:
        warm(recognizer, warm_pcm)
    raw_steps: list[dict[str, Any]] = []
    asr_steps: list[dict[str, Any]] = []
    heard: list[bytes] = []  # the latest platform step's recordings

    def raw(streams: int) -> None:
        common.say(
            f"raw Vosk: {streams} real-time stream(s) on the platform's "
            f"{len(heard)} latest recordings ..."
        )
        turn = len(raw_steps)
        pcms = heard[turn % len(heard) :] + heard[: turn % len(heard)]
        step = raw_asr_step(model, recognizers, pcms, streams, plan.asr_start_spread_s)
        common.say(
            f"  sustained {step['sustained']}/{streams}, final lag "
            f"{(step['final_lag_ms'] or {}).get('p95')} ms p95, CPU {step['cpu_s']} s, "
            f"machine {step['machine_cpu_pct']} %"
        )
        raw_steps.append(step)

    def live(streams: int) -> None:
        common.say(f"platform live ASR: {streams} call(s) ...")
        step = platform_asr_step(p, url, audio, scenario, streams, plan, workdir)
        common.say(
            f"  sustained {step['sustained']}/{streams}, lag "
            f"{(step['transcript_lag_ms'] or {}).get('p95')} ms p95, CPU s: SIP "
            f"{step['sip_process_cpu_s']} decoders {step['decoders_cpu_s']} sipp "
            f"{step['sipp_cpu_s']}; machine {step['machine_cpu_pct']} %"
        )
        asr_steps.append(step)
        recorded = [read_wav(Path(path))[0] for path in step["recordings"]]
        if recorded:
            heard[:] = recorded

    for streams in plan.asr_streams:
        if not asr_steps or asr_steps[-1]["all_sustained"]:
            live(streams)
        if not heard:
            raise RuntimeError("the platform recorded none of its calls: nothing to compare")
        if not raw_steps or raw_steps[-1]["all_sustained"]:
            raw(streams)
        if not raw_steps[-1]["all_sustained"] and not asr_steps[-1]["all_sustained"]:
            break
    live_between = refine(asr_steps, "streams", "all_sustained")
    raw_between = refine(raw_steps, "streams", "all_sustained")
    if live_between:
        live(live_between)
    if raw_between:
        raw(raw_between)
    return (
        sorted(raw_steps, key=lambda s: s["streams"]),
        sorted(asr_steps, key=lambda s: s["streams"]),
    )
