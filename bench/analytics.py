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
- ``export``: a CSV of the whole year (every ticket) streamed to a file in a child process
  of its own (bench/_analytics_export.py, or hotline.figures.export once it exists), its
  seconds and its resident-memory growth (peak − before).

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from bench._analytics_data import Loaded, Shape, load, month_of
from bench._common import machine, percentile, say, verdicts
from core.db import make_engine, make_session_factory
from dispatch.calendar import DEFAULT_TZ
from hotline import migrate
from hotline.figures import Filters, compute, overdue, unit_rates
from hotline.figures.filters import T, resolve

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


def volume_by_day(session: Session, filters: Filters) -> list[tuple[str, int]]:
    """Tickets taken in per Beijing-time day under ``filters``."""
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


def dashboard(session: Session, filters: Filters, now: datetime) -> dict[str, Any]:
    """Every figure a centre dashboard shows for ``filters``, as plain counts."""
    figures = compute(session, filters=filters, now=now)
    rates = unit_rates(session, filters=filters, now=now)
    late = overdue(session, filters=filters, now=now)
    volume = volume_by_day(session, filters)
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
    engines: dict[str, Engine], month: Filters, year: Filters, repeats: int, tmp: str
) -> dict[str, dict[str, Any]]:
    load_before = os.getloadavg()[0]
    times: dict[str, dict[str, list[float]]] = {n: {"dash": [], "rates": []} for n in engines}
    for _ in range(repeats):
        for name, engine in engines.items():
            times[name]["dash"].append(_call(engine, lambda s: dashboard(s, month, NOW))[0])
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
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="hotline-export-"))
        shown = {}
        for name, engine in engines.items():  # warm up; keep what the dashboard showed
            shown[name] = _call(engine, lambda s: dashboard(s, month, NOW))[1]
        per_run: dict[str, list[dict[str, Any]]] = {"baseline": [], "full": []}
        for run in range(runs):
            say(f"{db}: run {run + 1}/{runs}")
            for name, figures in one_run(engines, month, year, repeats, tmp).items():
                per_run[name].append(figures)
                say(f"{db}: {name} {figures}")
        result: dict[str, Any] = {}
        for name in engines:
            result[name] = {
                "tickets": loaded[name].tickets,
                "events": loaded[name].events,
                "assignments": loaded[name].assignments,
                "load_s": round(loaded[name].load_s, 1),
                **combine(per_run[name]),
                "runs": per_run[name],
            }
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
                f"(+{f['export_rss_growth_mib']} MiB)"
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
