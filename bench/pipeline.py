"""How fast does a request become a dispatched ticket with its deadlines armed, and does the
SLA sweep stay fast when a million assignments are open?

Four figures, each against its target from the issue, measured in one run (the machine is
shared and noisy, so compare the ratios, which are measured side by side):

  tickets_per_s_sqlite / _postgres  in-process intake -> classify -> dispatch -> deadlines
                                     (hotline.intake.submit, one commit per ticket) with
                                     the default rule pack + 1,000 synthetic keyword rules;
                                     median of the timed rounds               target >= 500
  http_intake_ratio                  POST /api/v1/tickets on the real app / a bare FastAPI
                                     app doing one INSERT, same PostgreSQL database, same
                                     client and concurrency                     target >= 0.5
  sweep_ratio_1m_vs_10k              dispatch.escalation.sweep with 1,000,000 open
                                     assignments / with 10,000, the same number due
                                                                                target <= 2
  rule_match_ms_p50                  CompiledRules.match() on 300 characters with 1,000
                                     rules (bench/rule_match.py)          target <= 0.5 ms

    python bench/pipeline.py                 # readable figures (1.5 minutes on 2 cores)
    python bench/pipeline.py --json          # one JSON object on stdout
    python bench/pipeline.py --quick         # smaller smoke run (about a minute)
    python bench/pipeline.py --profile       # also cProfile the pipeline and the HTTP intake

Progress goes to stderr. PostgreSQL is the test suite's server (tests/services.py): the
machine's on 127.0.0.1:5432 when there is one, else a private one started for the run.

This file is the program (the in-process pipeline, the run, the report); its pieces are in
bench/_pipeline_plan.py (the plans and what every part shares), bench/_http_intake.py (the
two apps, served by this file with the hidden `--serve`), bench/_sweep.py (the SLA sweep)
and bench/_profiling.py (cProfile hot spots).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# tests.services (the database helper) is not part of the installed package.
sys.path.insert(0, str(ROOT))


from bench import _common as common
from bench._http_intake import http_intake, serve
from bench._pipeline_plan import FULL, N_RULES, NOW, QUICK, Plan
from bench._profiling import hot_spots
from bench._sweep import sweep_scaling
from core.db import make_engine, session_scope
from hotline import intake
from tickets.models import TicketCreate

TARGETS = {
    "tickets_per_s_sqlite": (">=", 500),
    "tickets_per_s_postgres": (">=", 500),
    "http_intake_ratio": (">=", 0.5),
    "sweep_ratio_1m_vs_10k": ("<=", 2),
    "rule_match_ms_p50": ("<=", 0.5),
}


# ---------------------------------------------------------------- in-process pipeline


def _outcome(submission: intake.Submission) -> str:
    if submission.dispatch_error:
        return "dispatch_error"
    result = submission.dispatch
    if result is None or result.queued:
        return "queued"
    return "synthetic_rule" if (result.rule or "").startswith("synthetic-") else "default_rule"


def pipeline_rate(url: str, plan: Plan, *, seed_offset: int = 0) -> dict[str, Any]:
    """Submit tickets one unit of work each; the database is already seeded."""
    engine, factory = common.session_factory(url)
    total = plan.warmup + plan.tickets * plan.rounds
    intakes = common.request_texts(total, n_rules=N_RULES, seed_value=12345 + seed_offset)
    outcomes: Counter[str] = Counter()
    sequence = iter(range(10**9))

    def submit(data: TicketCreate) -> None:
        # Each ticket a second later: all on one local day, as a busy morning is.
        at = NOW + timedelta(seconds=next(sequence))
        with session_scope(factory) as session:
            outcomes[_outcome(intake.submit(session, data=data, actor=None, now=at))] += 1

    try:
        for data in intakes[: plan.warmup]:
            submit(data)
        outcomes.clear()
        rates, latencies = [], []
        for r in range(plan.rounds):
            batch = intakes[plan.warmup + r * plan.tickets :][: plan.tickets]
            start = time.perf_counter()
            for data in batch:
                t0 = time.perf_counter()
                submit(data)
                latencies.append(time.perf_counter() - t0)
            rates.append(len(batch) / (time.perf_counter() - start))
        result: dict[str, Any] = {
            "tickets_per_s": round(statistics.median(rates), 1),
            "rounds_tickets_per_s": [round(x, 1) for x in rates],
            "tickets_per_round": plan.tickets,
            "latency_ms": common.summary_ms(latencies),
            "mix": dict(outcomes),
        }
        if plan.profile:
            profiler = cProfile.Profile()
            extra = common.request_texts(
                plan.profile_tickets, n_rules=N_RULES, seed_value=999 + seed_offset
            )
            start = time.perf_counter()
            profiler.enable()
            for data in extra:
                submit(data)
            profiler.disable()
            result["profile"] = hot_spots(pstats.Stats(profiler), wall=time.perf_counter() - start)
        return result
    finally:
        engine.dispose()


# ---------------------------------------------------------------- rule matching


def rule_match() -> dict[str, Any]:
    from bench.rule_match import measure

    return measure(n_rules=N_RULES, text_len=300)


# ---------------------------------------------------------------- the run


def run(plan: Plan) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"machine": common.machine(), "plan": plan.__dict__}

    common.say("rule matching")
    match = rule_match()
    result["rule_match_ms_p50"] = match["rule_match_ms_p50"]
    result["rule_match"] = match

    common.say("pipeline on SQLite")
    with common.sqlite_database() as url:
        result["seed"] = common.seed(url, now=NOW, n_rules=N_RULES)
        sqlite = pipeline_rate(url, plan)
    result["tickets_per_s_sqlite"] = sqlite["tickets_per_s"]
    common.say(f"  {sqlite['tickets_per_s']} tickets/s")

    common.say("pipeline on PostgreSQL")
    with (
        common.postgres_database() as url,
        tempfile.TemporaryDirectory(prefix="hotline-bench-http-") as workdir,
    ):
        engine = make_engine(url)
        result["postgres_version"] = common.postgres_version(engine)
        engine.dispose()
        common.seed(url, now=NOW, n_rules=N_RULES)
        postgres = pipeline_rate(url, plan, seed_offset=1)
        result["tickets_per_s_postgres"] = postgres["tickets_per_s"]
        common.say(f"  {postgres['tickets_per_s']} tickets/s")
        common.say("HTTP intake: hotline app vs bare app (same PostgreSQL database)")
        http = http_intake(url, plan, Path(workdir))
    result["pipeline"] = {"sqlite": sqlite, "postgres": postgres}
    result["http_intake_ratio"] = http["http_intake_ratio"]
    result["http"] = http

    common.say("SLA sweep scaling")
    with common.postgres_database() as url:
        sweep = sweep_scaling(url, plan)
    result["sweep_ratio"] = sweep["sweep_ratio"]
    result["sweep_ratio_1m_vs_10k"] = (
        sweep["sweep_ratio"] if plan.sweep_sizes == (10_000, 1_000_000) else None
    )
    small, large = (sweep["sizes"][str(s)] for s in plan.sweep_sizes)
    result["sweep_s_small"] = small["sweep_s_median"]
    result["sweep_s_large"] = large["sweep_s_median"]
    result["sweep"] = sweep

    result["targets"] = common.verdicts(result, TARGETS)
    result["run_s"] = round(time.perf_counter() - started, 1)
    return result


def human(result: dict[str, Any]) -> str:
    m, seed = result["machine"], result["seed"]
    p, h, s = result["pipeline"], result["http"], result["sweep"]
    out: list[str] = []

    def line(text: str = "") -> None:
        out.append(text)

    line(
        f"machine: {m['nproc']} x {m['cpu_model']}, Python {m['python']}, "
        f"PostgreSQL {result['postgres_version']}"
    )
    line(f"rule book: {seed['rules_total']} rules ({seed['synthetic_rules']} synthetic)")
    line()
    line("in-process pipeline (submit + commit per ticket), median of rounds:")
    for backend in ("sqlite", "postgres"):
        r = p[backend]
        line(
            f"  {backend:9} {r['tickets_per_s']:8.1f} tickets/s   rounds "
            f"{r['rounds_tickets_per_s']}   latency p50 {r['latency_ms']['p50']} ms "
            f"p95 {r['latency_ms']['p95']} ms   mix {r['mix']}"
        )
    line()
    line(f"HTTP intake, {h['requests_per_app']} requests per app, concurrency {h['concurrency']}:")
    for label, kind, rate in (
        ("POST /api/v1/tickets", "hotline", "http_tickets_per_s"),
        ("bare INSERT app", "bare", "http_bare_inserts_per_s"),
    ):
        latency = h["latency_ms"][kind]
        line(
            f"  {label:21} {h[rate]:8.1f} req/s   p50 {latency['p50']} ms "
            f"p95 {latency['p95']} ms   server CPU {h['server_cpu_ms_per_request'][kind]} "
            f"ms/request, client {h['client_cpu_ms_per_request'][kind]} ms/request"
        )
    failures = f"   FAILURES {h['failures']}" if h["failures"] else ""
    line(f"  ratio {h['http_intake_ratio']} (per round {h['round_ratios']}){failures}")
    line()
    line(f"SLA sweep, {s['due_per_sweep']} due each time:")
    for r in s["sizes"].values():
        line(
            f"  {r['open_assignments']:>9,} open  sweep {r['sweep_s_median']:.3f} s "
            f"(runs {r['sweep_s']})  due query {r['due_query_ms_median']} ms"
        )
        line(f"             plan: {r['due_query_plan']}")
    line(f"  ratio {s['sweep_ratio']}")
    line()
    match = result["rule_match"]
    line(f"rule match: p50 {match['rule_match_ms_p50']} ms, p95 {match['rule_match_ms_p95']} ms")
    line()
    line("targets:")
    for key, verdict in result["targets"].items():
        mark = {True: "met", False: "MISSED", None: "n/a"}[verdict["met"]]
        line(f"  {key:26} {verdict['value']!s:>10}  {verdict['target']:>8}  {mark}")
    for name, section in (
        ("pipeline sqlite", p["sqlite"]),
        ("pipeline postgres", p["postgres"]),
        ("http intake (server CPU)", h),
    ):
        profile = section.get("profile")
        if not profile:
            continue
        line()
        line(f"profile, {name} ({profile['total_s']} s profiled):")
        for kind, rows in (("cum", profile["cumulative_project"]), ("own", profile["own_time"])):
            for r in rows:
                line(f"  {r['pct']:5.1f}%  {kind}  {r['at']}  ({r['calls']} calls)")
    line()
    line(f"run time {result['run_s']} s")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="a smaller smoke run")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the pipeline (both databases) and the HTTP server",
    )
    parser.add_argument("--serve", choices=["hotline", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--db-url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.db_url, args.port, args.profile_out)
        return
    plan = dataclasses.replace(QUICK if args.quick else FULL, profile=args.profile)
    result = run(plan)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(human(result))


if __name__ == "__main__":
    main()
