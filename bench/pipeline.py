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
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# tests.services (the database helper) is not part of the installed package.
sys.path.insert(0, str(ROOT))

import httpx
from sqlalchemy import select, text
from sqlmodel import Session

from accounts.models import Role
from bench import _common as common
from core.db import make_engine, make_session_factory, session_scope
from core.settings import Settings
from dispatch import escalation, policies, sla
from dispatch.models import Assignment, AssignmentRole, Clock, SlaPolicy, Unit
from dispatch.units import create_user
from hotline import intake
from hotline.seed import seed_demo
from tickets.models import TicketCreate

# A Tuesday, 10:00 in Shanghai: a working day chinese-calendar knows, so workday deadlines
# are computed from the real calendar.
NOW = datetime(2025, 6, 10, 2, 0, tzinfo=UTC)
N_RULES = 1000
TARGETS = {
    "tickets_per_s_sqlite": (">=", 500),
    "tickets_per_s_postgres": (">=", 500),
    "http_intake_ratio": (">=", 0.5),
    "sweep_ratio_1m_vs_10k": ("<=", 2),
    "rule_match_ms_p50": ("<=", 0.5),
}


@dataclass(frozen=True)
class Plan:
    tickets: int  # per timed round of the in-process pipeline
    rounds: int
    warmup: int
    http_requests: int  # per app, over all rounds
    http_rounds: int
    concurrency: int
    sweep_sizes: tuple[int, int]
    sweep_due: int
    sweep_reps: int
    profile: bool
    profile_tickets: int = 300


FULL = {
    "tickets": 1500,
    "rounds": 3,
    "warmup": 30,
    "http_requests": 2000,
    "http_rounds": 4,
    "concurrency": 8,
    "sweep_sizes": (10_000, 1_000_000),
    "sweep_due": 200,
    "sweep_reps": 3,
}
QUICK = {
    "tickets": 200,
    "rounds": 3,
    "warmup": 20,
    "http_requests": 300,
    "http_rounds": 2,
    "concurrency": 8,
    "sweep_sizes": (10_000, 100_000),
    "sweep_due": 50,
    "sweep_reps": 2,
}


# ---------------------------------------------------------------- profiling


def hot_spots(stats: pstats.Stats, *, wall: float, top: int = 15) -> dict[str, Any]:
    """The functions with the most time, inclusive (cumulative) of project code and
    exclusive (own) of everything, as shares of the profiled wall time."""
    rows = []
    for (path, line, func), (_, calls, own, cumulative, _) in stats.stats.items():
        ours = path.startswith(str(ROOT)) and "site-packages" not in path
        where = path
        if "site-packages/" in path:
            where = path.split("site-packages/", 1)[1]
        elif ours:
            where = os.path.relpath(path, ROOT)
        rows.append(
            {
                "at": f"{where}:{func}",
                "line": line,
                "calls": calls,
                "own_s": own,
                "cum_s": cumulative,
                "project": ours,
            }
        )

    def share(seconds: float) -> float:
        return round(100 * seconds / wall, 1)

    project = sorted(
        (r for r in rows if r["project"] and not r["at"].startswith("bench/")),
        key=lambda r: -r["cum_s"],
    )[:top]
    own = sorted(rows, key=lambda r: -r["own_s"])[:top]
    return {
        "total_s": round(wall, 3),
        "cumulative_project": [
            {"at": r["at"], "calls": r["calls"], "pct": share(r["cum_s"])} for r in project
        ],
        "own_time": [{"at": r["at"], "calls": r["calls"], "pct": share(r["own_s"])} for r in own],
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


# ---------------------------------------------------------------- HTTP intake

BARE_TABLE = "bench_bare_ticket"


def bare_app(url: str) -> Any:
    """The floor: FastAPI, the same request model, one INSERT and a commit."""
    from fastapi import FastAPI

    engine = make_engine(url)
    app = FastAPI()
    insert = text(
        f"INSERT INTO {BARE_TABLE} (channel, caller_name, caller_phone, address, district, "
        "street, title, description, request_type, urgency, created_at) VALUES (:channel, "
        ":caller_name, :caller_phone, :address, :district, :street, :title, :description, "
        ":request_type, :urgency, :created_at) RETURNING id"
    )

    @app.post("/bare", status_code=201)
    def create(data: TicketCreate) -> dict[str, int]:
        row = data.model_dump(
            include={
                "channel",
                "caller_name",
                "caller_phone",
                "address",
                "district",
                "street",
                "title",
                "description",
                "request_type",
                "urgency",
            },
            mode="json",
        )
        with engine.begin() as conn:
            ident = conn.execute(insert, {**row, "created_at": NOW}).scalar_one()
        return {"id": ident}

    return app


def bench_settings(url: str | None = None) -> Settings:
    # Outside development the default secret is refused; a benchmark needs any real one.
    return Settings(environment="test", secret_key=secrets.token_hex(32), database_url=url)


def hotline_app(url: str) -> Any:
    from core.clock import FrozenClock
    from web.app import create_app

    return create_app(
        settings=bench_settings(url),
        session_factory=make_session_factory(make_engine(url)),
        clock=FrozenClock(NOW),
    )


class _ThreadProfiles:
    """cProfile follows one thread; the sync routes run in a thread pool, so every new
    thread gets a profiler of its own and the stats are merged at the end. The timer is
    the thread's CPU time: one process saturates one core, so CPU is what limits it, and
    waits (row locks, the database, idle pool threads) would swamp a wall-clock profile."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start_in_thread(self, *_: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append(profile)
        profile.enable()

    def start(self) -> None:
        threading.setprofile(self._start_in_thread)
        self._start_in_thread()

    def dump(self, path: str) -> None:
        for profile in self.profiles:
            profile.disable()
        stats = pstats.Stats(self.profiles[0])
        for profile in self.profiles[1:]:
            stats.add(profile)
        stats.dump_stats(path)


def serve(kind: str, url: str, port: int, profile_out: str | None) -> None:
    """Child process: one uvicorn worker serving `kind` until SIGTERM."""
    import uvicorn

    app = hotline_app(url) if kind == "hotline" else bare_app(url)
    profiles = _ThreadProfiles() if profile_out else None
    if profiles:
        # uvicorn re-raises the SIGTERM it caught once it has shut down; without a handler
        # of ours that would end the process before the profile is written.
        signal.signal(signal.SIGTERM, lambda *_: None)
        profiles.start()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    if profiles:
        profiles.dump(profile_out)


class Server:
    def __init__(self, kind: str, url: str, workdir: Path, profile: bool) -> None:
        from tests.services import free_port

        self.kind = kind
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.profile_out = str(workdir / f"{kind}.pstats") if profile else None
        self.log = workdir / f"{kind}.log"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            kind,
            "--db-url",
            url,
            "--port",
            str(self.port),
        ]
        if self.profile_out:
            command += ["--profile-out", self.profile_out]
        with open(self.log, "w") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        from tests.services import port_open

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: see {self.log}")
            if port_open("127.0.0.1", self.port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} server did not listen within {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def load(
    base_url: str,
    path: str,
    payloads: Sequence[dict[str, Any]],
    *,
    concurrency: int,
    headers: dict[str, str],
    server_pid: int | None = None,
) -> dict[str, Any]:
    """POST every payload once, `concurrency` keep-alive clients at a time."""
    lock = threading.Lock()
    position = iter(range(len(payloads)))
    latencies: list[float] = []
    failures: Counter[str] = Counter()

    def worker() -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
            while True:
                with lock:
                    index = next(position, None)
                if index is None:
                    return
                t0 = time.perf_counter()
                try:
                    response = client.post(path, json=payloads[index])
                    failed = (
                        None
                        if response.status_code == 201
                        else f"{response.status_code} {response.text[:200]}"
                    )
                except httpx.HTTPError as exc:
                    failed = f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    if failed:
                        failures[failed] += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    server_cpu = common.cpu_seconds(server_pid) if server_pid else 0.0
    client_cpu = time.process_time()
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    n = len(payloads)
    return {
        "requests": n,
        "rate": n / wall,
        "latency": latencies,
        "failures": dict(failures),
        "server_cpu_ms": (common.cpu_seconds(server_pid) - server_cpu) * 1000 / n
        if server_pid
        else None,
        "client_cpu_ms": (time.process_time() - client_cpu) * 1000 / n,
    }


def http_intake(url: str, plan: Plan, workdir: Path) -> dict[str, Any]:
    """The real app and the bare app, served side by side from the same database; timed
    rounds alternate between them so drift on a noisy machine hits both alike."""
    engine, factory = common.session_factory(url)
    with session_scope(factory) as session:
        _, token = create_user(
            session,
            username="bench.operator",
            display_name="压测话务员",
            role=Role.operator,
            unit_code="CENTRE",
            now=NOW,
        )
        session.execute(
            text(
                f"CREATE TABLE {BARE_TABLE} (id bigserial PRIMARY KEY, channel text NOT NULL, "
                "caller_name text, caller_phone text, address text, district text, street text, "
                "title text, description text NOT NULL, request_type text NOT NULL, "
                "urgency text NOT NULL, created_at timestamptz NOT NULL)"
            )
        )
    engine.dispose()

    per_round = plan.http_requests // plan.http_rounds
    warmup = 50
    payloads = [
        d.model_dump(mode="json", exclude_none=True)
        for d in common.request_texts(
            warmup + per_round * plan.http_rounds, n_rules=N_RULES, seed_value=777
        )
    ]
    apps = {
        "hotline": ("/api/v1/tickets", {"Authorization": f"Bearer {token}"}),
        "bare": ("/bare", {}),
    }
    servers = {
        kind: Server(kind, url, workdir, plan.profile and kind == "hotline") for kind in apps
    }
    rates: dict[str, list[float]] = {kind: [] for kind in apps}
    server_cpu: dict[str, list[float]] = {kind: [] for kind in apps}
    client_cpu: dict[str, list[float]] = {kind: [] for kind in apps}
    latencies: dict[str, list[float]] = {kind: [] for kind in apps}
    failures: dict[str, Counter[str]] = {kind: Counter() for kind in apps}
    try:
        for server in servers.values():
            server.wait_ready()
        for kind, (path, headers) in apps.items():
            warm = load(
                servers[kind].base_url,
                path,
                payloads[:warmup],
                concurrency=plan.concurrency,
                headers=headers,
            )
            failures[kind].update(warm["failures"])
        for r in range(plan.http_rounds):
            batch = payloads[warmup + r * per_round :][:per_round]
            for kind in ("bare", "hotline") if r % 2 == 0 else ("hotline", "bare"):
                path, headers = apps[kind]
                common.say(f"  http round {r + 1}/{plan.http_rounds}: {kind}")
                got = load(
                    servers[kind].base_url,
                    path,
                    batch,
                    concurrency=plan.concurrency,
                    headers=headers,
                    server_pid=servers[kind].proc.pid,
                )
                rates[kind].append(got["rate"])
                server_cpu[kind].append(got["server_cpu_ms"])
                client_cpu[kind].append(got["client_cpu_ms"])
                latencies[kind] += got["latency"]
                failures[kind].update(got["failures"])
    finally:
        for server in servers.values():
            server.stop()

    hotline_rate = statistics.median(rates["hotline"])
    bare_rate = statistics.median(rates["bare"])
    result: dict[str, Any] = {
        "http_tickets_per_s": round(hotline_rate, 1),
        "http_bare_inserts_per_s": round(bare_rate, 1),
        "http_intake_ratio": round(hotline_rate / bare_rate, 3),
        "round_ratios": [
            round(h / b, 3) for h, b in zip(rates["hotline"], rates["bare"], strict=False)
        ],
        "rounds_per_s": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "requests_per_app": per_round * plan.http_rounds,
        "concurrency": plan.concurrency,
        "latency_ms": {k: common.summary_ms(v) for k, v in latencies.items()},
        # One uvicorn process runs on one core at most (the GIL): once it is saturated,
        # its CPU time per request sets the rate.
        "server_cpu_ms_per_request": {
            k: round(statistics.median(v), 3) for k, v in server_cpu.items()
        },
        "client_cpu_ms_per_request": {
            k: round(statistics.median(v), 3) for k, v in client_cpu.items()
        },
        "failures": {k: dict(v) for k, v in failures.items() if v},
    }
    profile_out = servers["hotline"].profile_out
    if profile_out and Path(profile_out).exists():
        stats = pstats.Stats(profile_out)
        result["profile"] = hot_spots(stats, wall=stats.total_tt)
        result["profile"]["note"] = "shares of the server's CPU time, all threads"
    return result


# ---------------------------------------------------------------- the SLA sweep

_TICKET_INSERT = (
    "INSERT INTO ticket (number, channel, status, confidential, district, title, description, "
    "request_type, urgency, category_code, category_name, return_count, reopen_count, "
    "created_at, updated_at, created_by, event_seq) "
    "SELECT :prefix || g, 'phone', 'dispatched', false, '榆阳区', '路灯不亮', "
    "'沿河那段路的路灯不亮已经一个多星期了，晚上走路很不安全，希望尽快修复。', 'complaint', "
    "'normal', '020301', '路灯', 0, 0, :created, :created, 'bench', 0 "
    "FROM generate_series(1, :n) AS g"
)
_ASSIGNMENT_INSERT = (
    "INSERT INTO assignment (ticket_id, unit_id, role, status, policy_id, rule_name, "
    "dispatched_by, started_at, sign_due_at, reply_due_at, close_due_at, extension_count, "
    "escalation_clock, escalation_level, next_escalation_at) "
    "SELECT t.id, :unit_id, 'lead', 'dispatched', :policy_id, '路灯', 'system', :started, "
    ":sign_due, :reply_due, :close_due, 0, 'sign', 0, "
    "CAST(:next_at AS timestamptz) + (t.id % :spread) * interval '1 second' "
    "FROM ticket t WHERE t.id > :after"
)


@dataclass(frozen=True)
class Armed:
    """Column values of assignments armed by dispatch.escalation.arm itself."""

    started: datetime
    sign_due: datetime
    reply_due: datetime
    close_due: datetime
    next_at: datetime
    steps_due: int  # how many steps of its chain are due at NOW


def armed(session: Session, *, policy: SlaPolicy, unit: Unit, started: datetime) -> Armed:
    calendar = policies.load_calendar(session)
    due = {f"{c.value}_due_at": sla.due_at(started, policy, c, calendar) for c in Clock}
    assignment = Assignment(
        ticket_id=0,
        unit_id=unit.id,
        role=AssignmentRole.lead,
        policy_id=policy.id,
        dispatched_by="system",
        started_at=started,
        **due,
    )
    escalation.arm(assignment, clock=Clock.sign, policy=policy, calendar=calendar)
    schedule = escalation.schedule_for(
        assignment, clock=Clock.sign, policy=policy, calendar=calendar
    )
    return Armed(
        started,
        due["sign_due_at"],
        due["reply_due_at"],
        due["close_due_at"],
        assignment.next_escalation_at,
        sum(step.at <= NOW for step in schedule),
    )


def _bulk_assignments(
    session: Session,
    *,
    prefix: str,
    n: int,
    template: Armed,
    unit: Unit,
    policy: SlaPolicy,
    spread_s: int,
) -> None:
    after = session.scalar(text("SELECT coalesce(max(id), 0) FROM ticket"))
    session.execute(text(_TICKET_INSERT), {"prefix": prefix, "n": n, "created": template.started})
    session.execute(
        text(_ASSIGNMENT_INSERT),
        {
            "unit_id": unit.id,
            "policy_id": policy.id,
            "started": template.started,
            "sign_due": template.sign_due,
            "reply_due": template.reply_due,
            "close_due": template.close_due,
            "next_at": template.next_at,
            "spread": spread_s,
            "after": after,
        },
    )


def sweep_scaling(url: str, plan: Plan) -> dict[str, Any]:
    """Sweep time with the small and the large number of open assignments, the same number
    due each time; fresh due assignments before every timed sweep."""
    engine, factory = common.session_factory(url)
    settings = bench_settings()
    with session_scope(factory) as session:
        seed_demo(session=session, now=NOW)
        policy = session.scalars(select(SlaPolicy).where(SlaPolicy.name == "general")).one()
        unit = session.scalars(select(Unit).where(Unit.code == "URBAN_MGMT")).one()
        # Due: started 20 h ago on a 24 h sign clock, so the warning (at 75 %) is due and
        # the chase (at the deadline) is not. Background: started now, nothing due for
        # hours, next steps spread over the coming month.
        due_template = armed(session, policy=policy, unit=unit, started=NOW - timedelta(hours=20))
        open_template = armed(session, policy=policy, unit=unit, started=NOW)
    assert due_template.next_at <= NOW and due_template.steps_due >= 1
    assert open_template.next_at > NOW

    result: dict[str, Any] = {"due_per_sweep": plan.sweep_due, "batch": 500, "sizes": {}}
    loaded = 0
    try:
        for size in plan.sweep_sizes:
            common.say(f"  sweep: loading open assignments up to {size:,}")
            start = time.perf_counter()
            with session_scope(factory) as session:
                _bulk_assignments(
                    session,
                    prefix=f"BG{size}-",
                    n=size - loaded,
                    template=open_template,
                    unit=unit,
                    policy=policy,
                    spread_s=30 * 24 * 3600,
                )
            loaded = size
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE ticket"))
                conn.execute(text("VACUUM ANALYZE assignment"))
            load_s = time.perf_counter() - start
            times, query_ms, fired = [], [], []
            for rep in range(plan.sweep_reps):
                with session_scope(factory) as session:
                    _bulk_assignments(
                        session,
                        prefix=f"DUE{size}-{rep}-",
                        n=plan.sweep_due,
                        template=due_template,
                        unit=unit,
                        policy=policy,
                        spread_s=1,
                    )
                query_ms.append(_due_query_ms(factory))
                if rep == 0:
                    plan_text = _due_query_plan(engine)
                seconds, outcome = common.timed(
                    lambda: escalation.sweep(factory, now=NOW, batch=500, settings=settings)
                )
                if outcome.fired != plan.sweep_due * due_template.steps_due or outcome.failed:
                    raise RuntimeError(
                        f"sweep fired {outcome.fired} steps ({outcome.failed} "
                        f"failed); expected {plan.sweep_due * due_template.steps_due}"
                    )
                times.append(seconds)
                fired.append(outcome.fired)
            with session_scope(factory) as session:
                open_count = session.scalar(
                    text("SELECT count(*) FROM assignment WHERE next_escalation_at IS NOT NULL")
                )
            result["sizes"][str(size)] = {
                "open_assignments": open_count,
                "load_s": round(load_s, 1),
                "sweep_s": [round(t, 3) for t in times],
                "sweep_s_median": round(statistics.median(times), 3),
                "due_query_ms_median": round(statistics.median(query_ms), 3),
                "due_query_plan": plan_text,
                "fired_per_sweep": fired[0],
            }
            common.say(f"  sweep with {open_count:,} open: {statistics.median(times):.3f} s")
    finally:
        engine.dispose()
    small, large = (result["sizes"][str(s)] for s in plan.sweep_sizes)
    result["sweep_ratio"] = round(large["sweep_s_median"] / small["sweep_s_median"], 3)
    return result


def _due_query_ms(factory: Callable[[], Session]) -> float:
    samples = []
    with session_scope(factory) as session:
        for _ in range(5):
            t0 = time.perf_counter()
            session.execute(escalation.due_assignments(now=NOW, batch=500, after=None)).all()
            samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def _due_query_plan(engine: Any) -> str:
    compiled = escalation.due_assignments(now=NOW, batch=500, after=None).compile(
        dialect=engine.dialect
    )
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).scalars().all()
    return " | ".join(line.strip() for line in plan)


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
    plan = Plan(**(QUICK if args.quick else FULL), profile=args.profile)
    result = run(plan)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(human(result))


if __name__ == "__main__":
    main()
