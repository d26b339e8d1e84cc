"""bench/calls.py's figures: the targets, the keys computed from the steps (the concurrency
and setup ladders, the repeated live-ASR comparison) and the readable report."""

from __future__ import annotations

import os
import statistics
from typing import Any

from bench import _common as common
from bench._call_steps import (
    GOOD_CORRELATION,
    LAG_BOUND_S,
    LAG_P95_BOUND_S,
    SETUP_HOLD_MS,
    failed_at,
    largest,
    ms,
)

# Issue 15 §6: one SIP process on 2 cores. The old keys keep their names (and the targets
# of the earlier issue: `answer_delay_ms_p50` at 20 calls/s <= 100 ms); the ratio's target is
# held on the worst of the repeats (`live_asr_capacity_ratio_min`).
TARGETS = {
    "max_concurrent_good": (">=", 500),
    "live_asr_capacity_ratio_min": (">=", 0.95),
    "setup_cps_ok": (">=", 200),
    "answer_delay_ms_p50": ("<=", 100),
    "answer_delay_ms_p50_at_200cps": ("<=", 20),
    "transcript_lag_ms_p95_at_capacity": ("<=", 1000),
}
SETUP_TARGET_RATE = 200  # answer_delay_ms_p50_at_200cps
ANSWER_DELAY_RATE = 20  # answer_delay_ms_p50: at 20 calls/s, as before


def add_call_figures(
    result: dict[str, Any],
    conc_steps: list[dict[str, Any]],
    setup_steps: list[dict[str, Any]],
    ramp_cps: int,
) -> None:
    result["concurrency"] = {
        "steps": conc_steps,
        "ramp_cps": ramp_cps,
        "correlation_bound": GOOD_CORRELATION,
    }
    result["max_concurrent_good"] = largest(conc_steps, "calls", "good")
    # The first step that failed (None: the top step passed, the figure is a lower bound),
    # and who ran out there: the SIP process's and sipp's CPU share (100 % = one core).
    result["concurrency_failed_at"] = failed_at(conc_steps, "calls", "good")
    result["setup_cps_failed_at"] = failed_at(setup_steps, "rate", "ok")
    for key, steps_, flag in (
        ("concurrency_failed_step", conc_steps, "good"),
        ("setup_failed_step", setup_steps, "ok"),
    ):
        failed = next((s for s in steps_ if not s[flag]), None)
        if failed is not None:
            result[key] = {
                k: failed.get(k)
                for k in (
                    "calls",
                    "rate",
                    "answered",
                    "lost_tickets",
                    "correlation",
                    "sip_process_cpu_pct",
                    "sipp_cpu_pct",
                    "machine_cpu_pct",
                    "loadavg_1m",
                    "sip_threads_cpu_s",
                )
                if k in failed
            }

    setup_ok = largest(setup_steps, "rate", "ok")
    result["setup_cps_ok"] = setup_ok

    def delay_p50(rate: float) -> float | None:
        delays: list[float] = next(
            (s["answer_delays_s"] for s in setup_steps if s["rate"] == rate), []
        )
        return ms(statistics.median(delays)) if delays else None

    # At the rate the issue asks for (or the highest that passed, when it was not reached),
    # and at the highest rate that passed.
    target_rate = ANSWER_DELAY_RATE
    result["answer_delay_ms_p50"] = delay_p50(min(target_rate, setup_ok) or setup_steps[0]["rate"])
    result["answer_delay_rate"] = min(target_rate, setup_ok) or setup_steps[0]["rate"]
    result["answer_delay_ms_p50_at_setup_cps_ok"] = delay_p50(setup_ok)
    # At the 200 calls/s (None when that rate was not run or failed).
    result["answer_delay_ms_p50_at_200cps"] = (
        delay_p50(SETUP_TARGET_RATE) if setup_ok >= SETUP_TARGET_RATE else None
    )
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
    result: dict[str, Any],
    repeats: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]],
) -> None:
    """The comparison's figures: per repeat (`live_asr_runs`), their min and median, and the
    first repeat's steps in full (`raw_vosk`, `live_asr`, the keys of one comparison)."""
    runs: list[dict[str, Any]] = []
    lags: list[float] = []
    lags_at_capacity: list[float] = []
    for n, (raw_steps, asr_steps) in enumerate(repeats):
        raw_capacity = largest(raw_steps, "streams", "all_sustained")
        platform_capacity = largest(asr_steps, "streams", "all_sustained")
        for step in asr_steps:
            if step["all_sustained"]:
                lags += step["transcript_lags_s"]
                if step["streams"] == platform_capacity:
                    lags_at_capacity += step["transcript_lags_s"]
        runs.append(
            {
                "platform_streams": platform_capacity,
                "raw_vosk_streams": raw_capacity,
                "ratio": round(platform_capacity / raw_capacity, 2) if raw_capacity else None,
                "first": "raw" if n % 2 else "platform",
                "platform_capped": bool(asr_steps[-1]["all_sustained"]),
                "raw_capped": bool(raw_steps[-1]["all_sustained"]),
                "steps": [
                    {
                        "streams": s["streams"],
                        "platform": _step_brief(s, "platform"),
                        "raw": next(
                            (
                                _step_brief(r, "raw")
                                for r in raw_steps
                                if r["streams"] == s["streams"]
                            ),
                            None,
                        ),
                    }
                    for s in asr_steps
                ]
                + [
                    {"streams": r["streams"], "platform": None, "raw": _step_brief(r, "raw")}
                    for r in raw_steps
                    if all(s["streams"] != r["streams"] for s in asr_steps)
                ],
            }
        )
    for _, asr_steps in repeats:
        for step in asr_steps:
            step.pop("transcript_lags_s", None)
    raw_steps, asr_steps = repeats[0]
    raw_capacity = largest(raw_steps, "streams", "all_sustained")
    platform_capacity = largest(asr_steps, "streams", "all_sustained")
    result["raw_vosk"] = {
        "steps": raw_steps,
        "realtime_streams": raw_capacity,
        "heard": result.pop("raw_heard"),
        "capped": bool(raw_steps[-1]["all_sustained"]),
    }
    result["live_asr"] = {
        "platform_steps": asr_steps,
        "platform_streams": platform_capacity,
        "platform_capped": bool(asr_steps[-1]["all_sustained"]),
        "raw_vosk_streams": raw_capacity,
        "lag_bound_s": LAG_BOUND_S,
        "lag_p95_bound_s": LAG_P95_BOUND_S,
        "default_max_live_streams": os.cpu_count(),
    }
    ratios = [r["ratio"] for r in runs if r["ratio"] is not None]
    result["live_asr_runs"] = runs
    result["live_asr_capacity_ratio_runs"] = ratios
    result["live_asr_capacity_ratio_min"] = min(ratios) if ratios else None
    result["live_asr_capacity_ratio_median"] = (
        round(statistics.median(ratios), 2) if ratios else None
    )
    # The old key: one comparison's ratio; now the median of the repeats.
    result["live_asr_capacity_ratio"] = result["live_asr_capacity_ratio_median"]
    result["transcript_lag_ms_p95"] = ms(common.percentile(lags, 95)) if lags else None
    result["transcript_lag_ms_p95_at_capacity"] = (
        ms(common.percentile(lags_at_capacity, 95)) if lags_at_capacity else None
    )


def _step_brief(step: dict[str, Any], side: str) -> dict[str, Any]:
    if side == "raw":
        return {
            "sustained": step["sustained"],
            "lag_p95_ms": (step["final_lag_ms"] or {}).get("p95"),
            "cpu_s": step["cpu_s"],
            "others_cpu_pct": step["others_cpu_pct"],
        }
    return {
        "sustained": step["sustained"],
        "lag_p95_ms": (step["transcript_lag_ms"] or {}).get("p95"),
        "decoders_cpu_s": step["decoders_cpu_s"],
        "sip_process_cpu_s": step["sip_process_cpu_s"],
        "sipp_cpu_s": step["sipp_cpu_s"],
        "others_cpu_pct": step["others_cpu_pct"],
    }


def human(result: dict[str, Any]) -> str:
    m, a = result["machine"], result["audio"]
    out = [
        f"machine: {m['nproc']} x {m['cpu_model']}, Python {m['python']}; "
        f"database {result['database']}",
        f"callers: greeting+beep {a['greeting_and_beep_s']} s, then speech; concurrency "
        f"calls {a['concurrency_call_s']} s, ASR calls {a['asr_call_s']} s "
        f"({a['asr_speech_s']} s of speech; recognizers warmed on "
        f"{a['warmup_s']} s of a caller's line)",
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
