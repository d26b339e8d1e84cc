"""bench/calls.py's steps: one concurrency step, one call-setup rate, one live-ASR step on the
platform and the same on raw Vosk, and the live-ASR comparison that interleaves the two."""

from __future__ import annotations

import math
import os
import resource
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import _common as common
from bench._call_audio import FRAME, RATE, Audio, alignment, correlation, warm, wav_samples
from bench._call_platform import Platform
from bench._sipp import SCENARIOS, outcomes, peak_concurrent, run_sipp, settled, speak_scenario
from bench.asr import new_recognizer
from telephony.models import TranscribedBy
from tests.speech import read_wav
from tickets.models import Status

GOOD_CORRELATION = 0.99
LAG_BOUND_S = 2.0  # AsrSettings.live_lag_s, the platform's own bound for a live transcript
# ... and the step's p95 within the transcript-lag target: a live-ASR step passes
# only at the service level the capacity is quoted at (both sides alike). With the 2 s
# bound alone, both sides' top steps ran at lag p95 1.2-1.9 s (2026-12-06).
LAG_P95_BOUND_S = 1.0
SETUP_HOLD_MS = 1000


@dataclass(frozen=True)
class Plan:
    concurrency: tuple[int, ...]  # calls at once, stepped up until a step is not good
    ramp_cps: int  # how fast sipp places a concurrency step's calls
    concurrency_sentences: int  # what each caller says there (bench/asr.py's, in turn)
    setup_rates: tuple[int, ...]  # calls/s, stepped up until one call fails
    setup_seconds: int  # calls placed per rate step: rate x this
    ramp_s: float  # a concurrency step's calls are all placed within this (ramp_cps)
    asr_streams: tuple[int, ...]  # live-ASR steps (platform and raw Vosk alike)
    asr_sentences: int  # a stream that falls behind shows more on longer speech
    asr_start_spread_s: float  # the calls of an ASR step start within this


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def p95_within(lags_s: Sequence[float]) -> bool:
    """A live-ASR step's lags meet the p95 bound (`LAG_P95_BOUND_S`)."""
    return bool(lags_s) and common.percentile(lags_s, 95) <= LAG_P95_BOUND_S


def quantiles_ms(values_s: Sequence[float]) -> dict[str, Any] | None:
    return common.summary_ms(values_s) if values_s else None


def ramp_cps(plan: Plan, calls: int) -> int:
    """How fast a concurrency step's calls are placed: the plan's ramp, faster for big steps
    so that every call is placed within ``plan.ramp_s`` and all of them overlap while they
    speak (a call lasts the greeting plus its speech, ~17 s)."""
    return max(plan.ramp_cps, math.ceil(calls / plan.ramp_s))


class Watch:
    """What a step cost while sipp ran: CPU of the SIP process (by thread group, sampled),
    of its decoder processes and of sipp (this process's waited-for children), how busy the
    whole machine was, and the load average at the end."""

    def __init__(self, p: Platform) -> None:
        self.p = p
        self.sampler = p.thread_sampler()

    def __enter__(self) -> Watch:
        self.split0 = self.p.cpu_split()
        self.children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.machine0 = common.machine_busy()
        self.t0 = time.perf_counter()
        self.sampler.__enter__()
        return self

    def __exit__(self, *_: object) -> None:
        self.sampler.__exit__()
        self.wall = time.perf_counter() - self.t0
        sip1, dec1 = self.p.cpu_split()
        self.sip, self.dec = sip1 - self.split0[0], dec1 - self.split0[1]
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.sipp = (children.ru_utime + children.ru_stime) - (
            self.children0.ru_utime + self.children0.ru_stime
        )
        self.machine = common.machine_cpu_pct(self.machine0, common.machine_busy())
        self.load = os.getloadavg()

    def figures(self) -> dict[str, Any]:
        wall = self.wall or 1e-9

        def pct(seconds: float) -> float:
            return round(100 * seconds / wall, 1)

        return {
            "platform_cpu_pct": pct(self.sip + self.dec),
            "platform_cpu_s": round(self.sip + self.dec, 1),
            "sip_process_cpu_pct": pct(self.sip),
            "sip_threads_cpu_s": self.sampler.groups(),
            "sipp_cpu_pct": pct(self.sipp),
            "machine_cpu_pct": self.machine,
            "loadavg_1m": round(self.load[0], 2),
            "wall_s": round(self.wall, 1),
        }


def concurrency_step(
    p: Platform, url: str, audio: Audio, scenario: Path, calls: int, plan: Plan, workdir: Path
) -> dict[str, Any]:
    hold_ms = int(audio.seconds * 1000) + 100
    ramp = ramp_cps(plan, calls)
    timeout = calls / ramp + audio.seconds + 30
    with Watch(p) as watch:
        run = run_sipp(
            scenario,
            target=p.target,
            calls=calls,
            rate=ramp,
            hold_ms=hold_ms,
            workdir=workdir / f"conc-{calls}",
            timeout_s=timeout,
        )
    seen = settled(url, run.pid, calls, timeout_s=60)
    sent = np.frombuffer(audio.pcm, dtype="<i2").astype(np.float64)
    answered_calls = [c for c in seen if c.answered]
    recorded = [wav_samples(c.recording_path) for c in answered_calls]
    correlations = [correlation(sent, samples) for samples in recorded]
    # the calls to look up in the SIP process's log (HOTLINE_BENCH_KEEP_LOGS keeps it)
    bad_calls = sorted(
        (x, c.call_id)
        for c, x in zip(answered_calls, correlations, strict=True)
        if x <= GOOD_CORRELATION
    )[:8]
    # What a bad recording looks like next to the good ones: longer by a reader's timeout or
    # more (silence put in for packets that came too late), shorter (frames lost), or empty.
    seconds = [round(samples.size / RATE, 2) for samples in recorded]
    good_seconds = [t for t, x in zip(seconds, correlations, strict=True) if x > GOOD_CORRELATION]
    bad_recordings = sorted(
        (round(x, 3), t)
        for t, x in zip(seconds, correlations, strict=True)
        if x <= GOOD_CORRELATION
    )[:8]
    worst = min(range(len(correlations)), key=correlations.__getitem__, default=None)
    worst_alignment = (
        alignment(sent, recorded[worst])
        if worst is not None and correlations[worst] <= GOOD_CORRELATION and recorded[worst].size
        else None
    )
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
        "ramp_cps": ramp,
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
            "worst_with_recorded_s": bad_recordings,
            "worst_call_ids": [call_id for _, call_id in bad_calls],
            "good_recorded_s_median": statistics.median(good_seconds) if good_seconds else None,
            # the worst recording, stretch by stretch: [at (s), found at in what was sent
            # (s), correlation] (_call_audio.alignment)
            "worst_alignment": worst_alignment,
        },
        "transcripts": outcomes(seen),
        "answer_delay_ms": quantiles_ms(run.answer_delays_s),
        **watch.figures(),
        "sipp_wall_s": round(run.wall_s, 1),
        **({} if run.returncode == 0 else {"sipp_tail": run.output[-600:]}),
    }


def setup_step(p: Platform, url: str, rate: int, plan: Plan, workdir: Path) -> dict[str, Any]:
    calls = rate * plan.setup_seconds
    with Watch(p) as watch:
        run = run_sipp(
            SCENARIOS / "uac_setup.xml",
            target=p.target,
            calls=calls,
            rate=rate,
            hold_ms=SETUP_HOLD_MS,
            workdir=workdir / f"setup-{rate}",
            timeout_s=plan.setup_seconds + 30,
        )
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
        **watch.figures(),
        **({} if run.returncode == 0 else {"sipp_tail": run.output[-600:]}),
    }


def platform_asr_step(
    p: Platform,
    url: str,
    audio: Audio,
    scenario: Path,
    streams: int,
    plan: Plan,
    workdir: Path,
    tag: str = "",
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
        workdir=workdir / f"asr{tag}-{streams}",
        timeout_s=audio.seconds + 40,
    )
    sipp1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine = common.machine_cpu_pct(machine0, common.machine_busy())  # while calls last
    ours_during_calls = sum(p.cpu_split()) - sip0 - dec0
    calls_wall = time.perf_counter() - t0
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
        "all_sustained": run.returncode == 0 and sustained == streams and p95_within(lags),
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
        # The machine's CPU not spent by the platform or sipp while the calls lasted (the
        # benchmark, PostgreSQL, other people's work), in % of one core.
        "others_cpu_pct": round(
            machine - 100 * (ours_during_calls + sipp_cpu) / max(calls_wall, 1e-9), 1
        ),
        "wall_s": round(wall, 1),
    }


def raw_asr_step(
    model: Any,
    recognizers: list,
    pcms: Sequence[bytes],
    streams: int,
    spread_s: float,
    partial_every: int = 1,
) -> dict[str, Any]:
    """`streams` threads each feed an utterance (stream i: `pcms[i % len(pcms)]`) to its
    own recogniser in real time, 20 ms frames as RTP brings them, with a partial read after
    every `partial_every` frames (1: after each, the baseline the target was set on; the
    platform reads one per live batch, `--raw-partials batch`); a stream is sustained when
    its final result comes within the lag bound of its audio's end — the platform's
    criterion too (how far behind a call's decoder fell on the way is not recorded there);
    `max_behind_ms` says how late the worst frame was decoded here."""
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
            if not rec.AcceptWaveform(pcm[i : i + FRAME]) and (n + 1) % partial_every == 0:
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
        "all_sustained": sustained == streams and p95_within(lags),
        "distinct_audio": len({hash(pcm) for pcm in audio}),
        "audio_s": round(sum(len(pcm) for pcm in audio) / 2 / RATE / streams, 2),
        "cpu_pct": round(100 * cpu / wall, 1),
        "cpu_s": round(cpu, 1),
        "machine_cpu_pct": machine,
        "others_cpu_pct": round(machine - 100 * cpu / wall, 1),
        "wall_s": round(wall, 1),
        "partial_every_frames": partial_every,
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


def failed_at(steps: Sequence[dict[str, Any]], key: str, flag: str) -> int | None:
    """The first step value that failed; None when every step run passed."""
    return next((s[key] for s in steps if not s[flag]), None)


def refine(steps: Sequence[dict[str, Any]], key: str, flag: str) -> int | None:
    """Between the last passing step and the first failing one, when they are more than two
    apart: the step half-way (even), so the figure's resolution is 2 streams, not 4."""
    passed = largest(steps, key, flag)
    failed = next((s[key] for s in steps if not s[flag]), None)
    if failed is None or failed - passed <= 2:
        return None
    return passed + (failed - passed) // 4 * 2


class AsrComparison:
    """The platform and raw Vosk step by step, in the same minutes of a shared machine, on
    the same audio: at each step one side runs, then the other (the platform first, or raw
    Vosk first: ``run(raw_first=...)``, alternated between repeats so that neither always
    meets the machine a minute later); raw Vosk decodes the latest platform step's
    recordings (what the platform's transcribers were fed: the caller's line from the end of
    the greeting to the BYE). Both start from as many recognizers warmed on the same audio
    (`warm_pcm`, what a caller's line carries) and keep them across steps and repeats.

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

    def __init__(
        self,
        p: Platform,
        url: str,
        model: Any,
        audio: Audio,
        warm_pcm: bytes,
        plan: Plan,
        workdir: Path,
        raw_partial_every: int = 1,
    ) -> None:
        self.p, self.url, self.model, self.audio = p, url, model, audio
        self.raw_partial_every = raw_partial_every
        self.plan, self.workdir = plan, workdir
        self.scenario = speak_scenario(audio, workdir)
        common.say(f"raw Vosk: warming {max(plan.asr_streams)} recognizers ...")
        self.recognizers = [new_recognizer(model) for _ in range(max(plan.asr_streams))]
        # On as many threads as the platform's decoder processes warm on (one per CPU):
        # libvosk releases the GIL; one after another took minutes on a busy machine.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(lambda recognizer: warm(recognizer, warm_pcm), self.recognizers))
        self.heard: list[bytes] = []  # the latest platform step's recordings
        self.raw_turns = 0

    def raw(self, streams: int) -> dict[str, Any]:
        heard = self.heard
        common.say(
            f"raw Vosk: {streams} real-time stream(s) on the platform's "
            f"{len(heard)} latest recordings ..."
        )
        turn = self.raw_turns
        self.raw_turns += 1
        pcms = heard[turn % len(heard) :] + heard[: turn % len(heard)]
        step = raw_asr_step(
            self.model,
            self.recognizers,
            pcms,
            streams,
            self.plan.asr_start_spread_s,
            self.raw_partial_every,
        )
        common.say(
            f"  sustained {step['sustained']}/{streams}, final lag "
            f"{(step['final_lag_ms'] or {}).get('p95')} ms p95, CPU {step['cpu_s']} s, "
            f"machine {step['machine_cpu_pct']} % (others {step['others_cpu_pct']} %)"
        )
        return step

    def live(self, streams: int, tag: str) -> dict[str, Any]:
        common.say(f"platform live ASR: {streams} call(s) ...")
        step = platform_asr_step(
            self.p, self.url, self.audio, self.scenario, streams, self.plan, self.workdir, tag
        )
        common.say(
            f"  sustained {step['sustained']}/{streams}, lag "
            f"{(step['transcript_lag_ms'] or {}).get('p95')} ms p95, CPU s: SIP "
            f"{step['sip_process_cpu_s']} decoders {step['decoders_cpu_s']} sipp "
            f"{step['sipp_cpu_s']}; machine {step['machine_cpu_pct']} % (others "
            f"{step['others_cpu_pct']} %)"
        )
        recorded = [read_wav(Path(path))[0] for path in step["recordings"]]
        if recorded:
            self.heard[:] = recorded
        return step

    def run(
        self, steps: Sequence[int], *, raw_first: bool = False, tag: str = ""
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One comparison over `steps`: each side stops at its first step where a stream
        missed the bound, and where its last pass and first miss are 4 apart the step
        between is run too. Returns (raw Vosk's steps, the platform's), by size."""
        raw_steps: list[dict[str, Any]] = []
        asr_steps: list[dict[str, Any]] = []

        def live_on() -> bool:
            return not asr_steps or asr_steps[-1]["all_sustained"]

        def raw_on() -> bool:
            return not raw_steps or raw_steps[-1]["all_sustained"]

        def confirmed(step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
            # A step missed is run once more, on either side alike, and the second try
            # counts: on a shared machine one burst of another process's CPU during a 30 s
            # step decided the capacity of one side, and the ratio swung from 0.86 to 1.33
            # between repeats of the same run (2026-12-05). A side that really is at its
            # capacity misses twice.
            first = step()
            if first["all_sustained"]:
                return first
            common.say("  missed: the same step once more")
            return {**step(), "first_try": _brief(first)}

        def pair(streams: int, *, live: bool, raw: bool) -> None:
            # raw Vosk needs recordings: the platform goes first until it has made some
            for side in ("raw", "live") if raw_first and self.heard else ("live", "raw"):
                if side == "live" and live:
                    asr_steps.append(confirmed(lambda: self.live(streams, tag)))
                if side == "raw" and raw:
                    if not self.heard:
                        raise RuntimeError("the platform recorded none of its calls")
                    raw_steps.append(confirmed(lambda: self.raw(streams)))

        for streams in steps:
            pair(streams, live=live_on(), raw=raw_on())
            if not live_on() and not raw_on():
                break
        # A repeat starts 2 below the capacity found before: a side that misses its first
        # step there goes down 2 at a time until one passes (halving towards 0 once said 8
        # where the truth lay between 14 and 16).
        for steps_of, live in ((asr_steps, True), (raw_steps, False)):
            while steps_of and largest(by_size(steps_of), "streams", "all_sustained") == 0:
                lower = min(s["streams"] for s in steps_of) - 2
                if lower < 1:
                    break
                pair(lower, live=live, raw=not live)
        live_between = refine(by_size(asr_steps), "streams", "all_sustained")
        raw_between = refine(by_size(raw_steps), "streams", "all_sustained")
        if live_between == raw_between and live_between:
            pair(live_between, live=True, raw=True)
        else:
            if live_between:
                pair(live_between, live=True, raw=False)
            if raw_between:
                pair(raw_between, live=False, raw=True)
        return by_size(raw_steps), by_size(asr_steps)


def by_size(steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(steps, key=lambda s: s["streams"])


def _brief(step: dict[str, Any]) -> dict[str, Any]:
    """What a missed first try of a step is kept as, beside the second."""
    keys = ("sustained", "machine_cpu_pct", "others_cpu_pct", "final_lag_ms", "transcript_lag_ms")
    return {key: step[key] for key in keys if key in step}


def repeat_steps(plan_steps: Sequence[int], capacities: Sequence[int]) -> tuple[int, ...]:
    """A repeat's steps after the first comparison: from 2 below the smaller capacity found
    (4 below, at most down to the plan's first step) every 2 up to the plan's top — each
    side still stops at its first miss, so a repeat takes a few steps, not the ladder."""
    low = max(min(plan_steps), min(capacities) - 2)
    top = max(plan_steps)
    return tuple(range(max(low, 1), top + 1, 2)) or (top,)
