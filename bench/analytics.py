"""How fast are the centre's figures on a year of a big city's tickets (issue 18)?

Builds, once per backend, a city of ``--tickets`` (1,000,000) tickets and ``--events``
(3,000,000) audit events over the year before ``now`` (bench/_analytics_data.py: bulk
``COPY`` on PostgreSQL, ``executemany`` on SQLite), plus a baseline city of ``--baseline``
(10,000) tickets built the same way, each in a throwaway database (PostgreSQL
``bench_analytics_<pid>_<size>`` on the test suite's server, dropped after; SQLite in a
temp dir). Then, ``--runs`` (3) times, interleaving the two cities call by call:

- ``dashboard``: what a centre dashboard shows for the last whole month, all units —
  ``hotline.figures.compute`` over every definition, ``unit_rates``, ``overdue`` and the
  volume by day — each call in a session of its own, ``--repeats`` (20) calls: p50, p95;
- ``unit_rates``: ``hotline.figures.unit_rates`` for the same month alone, p50, p95;
- ``dashboard_scan``: the same dashboard by the exact scan (``summary=False``), ``--scan-repeats``
  (3) calls per run, p50 — what the summaries save;
- ``export``: a CSV of the whole year (every ticket) streamed to a file in a child process
  of its own (bench/_analytics_export.py, or hotline.figures.export once it exists), its
  seconds and its resident-memory growth (peak − before).

The figures' summary tables (hotline.figures.summary) are built once after the load
(``summary_full_build_s``) and the dashboard read through them; ``summary_matches_scan`` says
the dashboard's counts equal the exact scan's. After the runs, ``--runs`` times, a day's
changes: every ticket with an audit event in the day before ``now`` (the generated city's
last day of work: its new tickets, signs, replies, callbacks) gets one more event, and the
summaries are refreshed a day later, so the deadlines that passed in the day are judged again
too (``summary_incremental_refresh_ms``, ``summary_incremental_days`` counted again); just
before that refresh, one dashboard of the month before that day, its changed days counted
live (``dashboard_before_refresh_ms``: the worst a reader sees if the refresh stopped for a
day).

Per backend: each figure's median over the runs and the worst run; ``*_ratio_vs_<n>``
compares the full city with the baseline measured in the same run. The top-level figures
are the worse backend's. ``figures`` holds the dashboard's counts (numerator, denominator)
so they can be checked against the data.

    python bench/analytics.py --json [--tickets N] [--events N] [--db sqlite|postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bench._analytics_data import Loaded, Shape, load, month_of
from bench._common import machine, percentile, say, verdicts
from core.db import make_engine, make_session_factory, table_of
from dispatch.calendar import DEFAULT_TZ
from hotline import migrate
from hotline.figures import Filters, compute, overdue, summary, summary_read, unit_rates
from hotline.figures.filters import T, resolve
from tickets.models import TicketEvent

TARGETS = {
    "dashboard_p95_ms": ("<=", 300.0),
    "unit_rates_p95_ms": ("<=", 150.0),
    "export_1m_rows_s": ("<=", 30.0),
}
NOW = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)  # 09:00 Beijing time, a Saturday


# ---------------------------------------------------------------- databases


@contextmanager
def database(db: str, label: str) -> Iterator[Engine]:
    """A fresh migrated database: PostgreSQL ``bench_analytics_<pid>_<label>`` (dropped
    after) or a SQLite file in a temp dir."""
    if db == "sqlite":
        with tempfile.TemporaryDirectory(prefix="hotline-analytics-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            migrate.upgrade(url)
            engine = make_engine(url)
            try:
                yield engine
            finally:
                engine.dispose()
        return
    import psycopg

    from tests.services import postgres_server

    host, port = postgres_server()
    name = f"bench_analytics_{os.getpid()}_{label}"
    admin = f"host={host} port={port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgresql+psycopg://postgres@{host}:{port}/{name}"
        migrate.upgrade(url)
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- what a dashboard reads


def volume_by_day(
    session: Session, filters: Filters, now: datetime = NOW, *, exact: bool = False
) -> list[tuple[str, int]]:
    """Tickets taken in per Beijing-time day under ``filters``: from the summary tables
    where they answer, unless ``exact``."""
    counted = (
        None if exact else summary_read.tickets_by_day(session, resolve(session, filters), now)
    )
    if counted is not None:
        return [(d.isoformat(), n) for d, n in counted.items()]
    if session.get_bind().dialect.name == "sqlite":
        day = func.date(T.c.created_at, "+8 hours")
    else:
        day = func.to_char(func.timezone(str(DEFAULT_TZ), T.c.created_at), "YYYY-MM-DD")
    rows = session.execute(
        select(day, func.count())
        .select_from(T)
        .where(*resolve(session, filters).ticket_where())
        .group_by(day)
        .order_by(day)
    ).all()
    return [(str(d), int(n)) for d, n in rows]


def dashboard(
    session: Session, filters: Filters, now: datetime, *, exact: bool = False
) -> dict[str, Any]:
    """Every figure a centre dashboard shows for ``filters``, as plain counts; through the
    summary tables where built, or (``exact``) by the scan."""
    figures = compute(session, filters=filters, now=now, summary=not exact)
    rates = unit_rates(session, filters=filters, now=now, summary=not exact)
    late = overdue(session, filters=filters, now=now, summary=not exact)
    volume = volume_by_day(session, filters, now, exact=exact)
    return {
        "figures": {n: [f.numerator, f.denominator] for n, f in figures.items()},
        "units_ranked": len(rates),
        "unit_rates": {
            u.unit_id: [u.response.numerator, u.response.denominator, u.rank] for u in rates
        },
        "overdue": [late.figure.numerator, round(late.days_total, 3)],
        "volume_by_day": volume,
    }


def _call(engine: Engine, fn: Callable[[Session], Any]) -> tuple[float, Any]:
    factory = make_session_factory(engine)
    started = time.perf_counter()
    with factory() as session:
        result = fn(session)
    return time.perf_counter() - started, result


def export(
    engine: Engine, start: datetime, end: datetime, tmp: str, via: str = "auto"
) -> dict[str, Any]:
    """The year's CSV in a child process: its seconds and memory growth. ``via``: "auto"
    (hotline.figures.export when it exists) or "bench" (bench/_analytics_export.py's)."""
    out = str(Path(tmp) / "export.csv")
    url = engine.url.render_as_string(hide_password=False)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "_analytics_export.py"), url,
         start.isoformat(), end.isoformat(), out, via],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    Path(out).unlink(missing_ok=True)
    figures: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


# ---------------------------------------------------------------- measuring


def _ms(values: list[float], q: float) -> float:
    return round(percentile([v * 1000 for v in values], q), 3)


def one_run(
    engines: dict[str, Engine],
    month: Filters,
    year: Filters,
    repeats: int,
    tmp: str,
    scan_repeats: int = 3,
) -> dict[str, dict[str, Any]]:
    load_before = os.getloadavg()[0]
    times: dict[str, dict[str, list[float]]] = {
        n: {"dash": [], "rates": [], "scan": []} for n in engines
    }
    for _ in range(repeats):
        for name, engine in engines.items():
            times[name]["dash"].append(_call(engine, lambda s: dashboard(s, month, NOW))[0])
    for _ in range(scan_repeats):
        for name, engine in engines.items():
            seconds = _call(engine, lambda s: dashboard(s, month, NOW, exact=True))[0]
            times[name]["scan"].append(seconds)
    for _ in range(repeats):
        for name, engine in engines.items():
            seconds = _call(engine, lambda s: unit_rates(s, filters=month, now=NOW))[0]
            times[name]["rates"].append(seconds)
    out: dict[str, dict[str, Any]] = {}
    for name, engine in engines.items():
        made = export(engine, year.start, year.end, tmp)
        t = times[name]
        out[name] = {
            "dashboard_p50_ms": round(statistics.median(t["dash"]) * 1000, 3),
            "dashboard_p95_ms": _ms(t["dash"], 95),
            "unit_rates_p50_ms": round(statistics.median(t["rates"]) * 1000, 3),
            "unit_rates_p95_ms": _ms(t["rates"], 95),
            "dashboard_scan_p50_ms": round(statistics.median(t["scan"] or [0.0]) * 1000, 3),
            "export_s": made["seconds"],
            "export_rows": made["rows"],
            "export_via": made["via"],
            "export_bytes": made["bytes"],
            "export_rss_growth_mib": made["rss_growth_mib"],
            "export_rss_peak_mib": made["rss_peak_mib"],
            # the machine is shared: its 1-minute load average before and after the run
            "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        }
    return out


def build_summaries(engine: Engine) -> float:
    """The summaries' first (full) build at ``NOW``: its seconds."""
    started = time.perf_counter()
    with make_session_factory(engine)() as session:
        summary.refresh(session, now=NOW)
        session.commit()
    return time.perf_counter() - started


def a_days_changes(engine: Engine, day: int) -> dict[str, float]:
    """The tickets of the day before ``NOW`` changed again ``day`` days later, the summaries
    refreshed then: the refresh's milliseconds and the days it counted again."""
    at = NOW + timedelta(days=day)
    e = table_of(TicketEvent)
    factory = make_session_factory(engine)
    with factory() as session:
        active = session.scalars(
            select(e.c.ticket_id).where(e.c.at >= NOW - timedelta(days=1), e.c.at < NOW).distinct()
        ).all()
        rows = [
            {"ticket_id": t, "seq": 1000 + day, "at": at, "actor": "bench", "action": "note",
             "data": {}}
            for t in active
        ]  # fmt: skip
        if rows:
            session.execute(e.insert(), rows)
        session.commit()
    start, end = month_of(at)
    stale = _call(engine, lambda s: dashboard(s, Filters(start=start, end=end), at))[0]
    started = time.perf_counter()
    with factory() as session:
        done = summary.refresh(session, now=at)
        session.commit()
    return {
        "summary_incremental_refresh_ms": round((time.perf_counter() - started) * 1000, 3),
        "dashboard_before_refresh_ms": round(stale * 1000, 3),
        "summary_incremental_days": done.days,
        "summary_incremental_tickets": len(active),
    }


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over the runs and the worst run of every timing and memory figure."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        if key.endswith(("_ms", "_s", "_mib")):
            values = [r[key] for r in runs]
            out[key] = round(statistics.median(values), 3)
            out[f"{key}_worst"] = max(values)
        else:
            out[key] = runs[0][key]
    return out


def measure_backend(
    db: str, *, tickets: int, events: int, baseline: int, repeats: int, runs: int
) -> dict[str, Any]:
    start, end = month_of(NOW)
    month = Filters(start=start, end=end)
    year = Filters(start=datetime(NOW.year - 1, NOW.month, NOW.day, 1, tzinfo=UTC), end=NOW)
    with ExitStack() as stack:
        engines: dict[str, Engine] = {}
        loaded: dict[str, Loaded] = {}
        for name, n, e in (("baseline", baseline, baseline * events // max(tickets, 1)),
                           ("full", tickets, events)):  # fmt: skip
            engine = stack.enter_context(database(db, str(n)))
            say(f"{db}: generating and loading {n:,} tickets, {e:,} events")
            loaded[name] = load(engine, Shape(tickets=n, events=e, now=NOW))
            say(f"{db}: loaded in {loaded[name].load_s:.1f} s")
            engines[name] = engine
        built: dict[str, float] = {}
        for name, engine in engines.items():
            built[name] = build_summaries(engine)
            say(f"{db}: {name} summaries built in {built[name]:.1f} s")
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hotline-export-"))
        shown, matches = {}, {}
        for name, engine in engines.items():  # warm up; keep what the dashboard showed
            shown[name] = _call(engine, lambda s: dashboard(s, month, NOW))[1]
            exact = _call(engine, lambda s: dashboard(s, month, NOW, exact=True))[1]
            matches[name] = _same(shown[name], exact)
        per_run: dict[str, list[dict[str, Any]]] = {"baseline": [], "full": []}
        for run in range(runs):
            say(f"{db}: run {run + 1}/{runs}")
            for name, figures in one_run(engines, month, year, repeats, tmp).items():
                per_run[name].append(figures)
                say(f"{db}: {name} {figures}")
        changes = [a_days_changes(engines["full"], day) for day in range(1, runs + 1)]
        say(f"{db}: a day's changes {changes}")
        result: dict[str, Any] = {}
        for name in engines:
            result[name] = {
                "tickets": loaded[name].tickets,
                "events": loaded[name].events,
                "assignments": loaded[name].assignments,
                "load_s": round(loaded[name].load_s, 1),
                "summary_full_build_s": round(built[name], 3),
                "summary_matches_scan": matches[name],
                **combine(per_run[name]),
                "runs": per_run[name],
            }
        result["full"] |= combine(changes) | {"incremental_runs": changes}
        full, base = result["full"], result["baseline"]
        for key in ("dashboard_p95_ms", "unit_rates_p95_ms", "export_s"):
            full[f"{key}_ratio_vs_{baseline}"] = (
                round(full[key] / base[key], 2) if base[key] else None
            )
        result["figures"] = shown["full"]
        result["month"] = [start.isoformat(), end.isoformat()]
        if db == "postgres":
            with engines["full"].connect() as conn:
                result["postgres_version"] = conn.exec_driver_sql("SHOW server_version").scalar()
        return result


def _same(fast: dict[str, Any], exact: dict[str, Any]) -> bool:
    late, exact_late = fast["overdue"], exact["overdue"]
    return (
        {k: v for k, v in fast.items() if k != "overdue"}
        == {k: v for k, v in exact.items() if k != "overdue"}
        and late[0] == exact_late[0]
        and abs(late[1] - exact_late[1]) <= 0.001
    )


def figures(backends: dict[str, dict[str, Any]], **sizes: int) -> dict[str, Any]:
    """The top-level keys: the worse backend's figure on the full city."""
    fulls = [b["full"] for b in backends.values()]
    out: dict[str, Any] = {"bench": "analytics", **sizes}
    for key, source in (
        ("dashboard_p95_ms", "dashboard_p95_ms"),
        ("unit_rates_p95_ms", "unit_rates_p95_ms"),
        ("export_1m_rows_s", "export_s"),
        ("export_rss_growth_mib", "export_rss_growth_mib"),
    ):
        out[key] = max(f[source] for f in fulls)
        out[f"{key}_worst"] = max(f[f"{source}_worst"] for f in fulls)
    out["export_rows"] = min(f["export_rows"] for f in fulls)
    for key in ("summary_full_build_s", "summary_incremental_refresh_ms"):
        out[key] = max(f[key] for f in fulls)
    out["summary_incremental_refresh_ms_worst"] = max(
        f["summary_incremental_refresh_ms_worst"] for f in fulls
    )
    out["summary_matches_scan"] = all(f["summary_matches_scan"] for f in fulls)
    out["targets"] = verdicts(out, TARGETS)
    return out | {"backends": backends, "machine": machine()}


def report(
    *, dbs: list[str], tickets: int, events: int, baseline: int, repeats: int, runs: int
) -> dict[str, Any]:
    backends = {
        db: measure_backend(
            db, tickets=tickets, events=events, baseline=baseline, repeats=repeats, runs=runs
        )
        for db in dbs
    }
    return figures(
        backends, tickets=tickets, events=events, baseline=baseline, repeats=repeats, runs=runs
    )


def _readable(result: dict[str, Any], emit: Callable[[str], None]) -> None:
    for key, verdict in result["targets"].items():
        emit(f"{key:>18}: {verdict['value']} (target {verdict['target']}, met: {verdict['met']})")
    for db, figs in result["backends"].items():
        for name in ("baseline", "full"):
            f = figs[name]
            emit(
                f"{db:>8} {name:>8} {f['tickets']:>9,} tickets: dashboard p95 "
                f"{f['dashboard_p95_ms']} (worst {f['dashboard_p95_ms_worst']}) ms, unit_rates "
                f"p95 {f['unit_rates_p95_ms']} (worst {f['unit_rates_p95_ms_worst']}) ms, "
                f"export {f['export_rows']:,} rows {f['export_s']} s "
                f"(+{f['export_rss_growth_mib']} MiB), summaries built in "
                f"{f['summary_full_build_s']} s, same as the scan: {f['summary_matches_scan']}"
            )
        full = figs["full"]
        emit(
            f"{db:>8} a day's changes: refresh {full['summary_incremental_refresh_ms']} (worst "
            f"{full['summary_incremental_refresh_ms_worst']}) ms, "
            f"{full['summary_incremental_days']} days counted again"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, help="default: 3 per ticket")
    parser.add_argument("--baseline", type=int, default=10_000)
    parser.add_argument("--db", choices=("sqlite", "postgres"), action="append")
    parser.add_argument("--repeats", type=int, default=20, help="calls per figure per run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    result = report(
        dbs=args.db or ["postgres", "sqlite"],
        tickets=args.tickets,
        events=args.events or 3 * args.tickets,
        baseline=args.baseline,
        repeats=max(1, min(args.repeats, 100)),
        runs=max(1, min(args.runs, 5)),
    )
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        _readable(result, print)


if __name__ == "__main__":
    main()
