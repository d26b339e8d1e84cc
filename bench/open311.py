"""How fast is the Open311 GeoReport v2 endpoint (issue 19)?

Per backend, in throwaway databases (PostgreSQL ``bench_open311_<pid>_<label>`` on the test
suite's server, dropped after; SQLite files in a temp dir), each served by the real app in
a uvicorn child process of its own on 127.0.0.1 (frozen clock at ``NOW``; the Open311 rate
limits raised through ``app.state.open311_limits``, yet counted — in Redis with the default
``--broker redis``, as production shares them between web processes):

- ``post``: a demo city (``hotline.seed.seed_demo``'s units, policies and rule pack), an
  operator token and an Open311 API key issued with ``hotline.open311.clients.issue``. Each
  run sends ``--posts`` requests of each kind — ``POST /api/v1/tickets`` (JSON body), then
  ``POST /open311/v2/requests.json`` and ``.xml`` (form-encoded, the same caller texts,
  service codes from the catalogue) — from ``--concurrency`` (4) keep-alive client threads,
  in slices of 100 that interleave the three kinds, the order rotating (short slices: a
  burst of other work on a shared machine falls on all three kinds alike). ``post_requests_ratio``:
  the slower Open311 format's rate over the API's in the same run; ``post_cpu_ratio`` the
  same from the server's CPU time per request.
- ``get``: a year of a city's tickets built by bench/_analytics_data.py (``COPY`` on
  PostgreSQL, ``executemany`` on SQLite): ``--tickets`` (1,000,000) and a baseline of
  ``--baseline`` (10,000), each in its own database and server. Each run sends, one at a time
  and alternating the two cities, ``--get-repeats`` rounds of the queries a partner polls
  with: ``GET /open311/v2/requests.json`` with the default 90-day window, ``status=open``,
  one of the three busiest service codes and page 1 or 2 of ``page_size=100``. Before the
  runs every query's answer is checked against the tickets (a plain SQL query); after them,
  on PostgreSQL, the list query the service layer sends is shown with EXPLAIN ANALYZE.

Per run: rates, GET p50/p95. Per backend: medians over the runs and the worst run. The
top-level figures are the worst run of the worse backend.

    python bench/open311.py --json [--tickets N] [--db sqlite|postgres] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from bench import _common as common
from bench import _open311_load as web
from bench._analytics_data import Shape, load
from bench._common import machine, percentile, say, verdicts
from core.db import make_engine, make_session_factory, session_scope
from hotline import migrate

TARGETS = {
    "post_requests_ratio": (">=", 0.8),
    "get_requests_p95_ms": ("<=", 100.0),
}
NOW = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)  # 09:00 Beijing time, a Saturday
# The busiest categories of bench/_analytics_data.py's city (物业服务, 噪声污染, 供暖).
GET_CODES = ("010203", "070101", "110401")
GET_PAGES = (1, 2)
PAGE_SIZE = 100


# ---------------------------------------------------------------- databases


@contextmanager
def database(db: str, label: str) -> Iterator[str]:
    """A fresh migrated database's URL: PostgreSQL ``bench_open311_<pid>_<label>`` (dropped
    after) or a SQLite file in a temp dir."""
    if db == "sqlite":
        with tempfile.TemporaryDirectory(prefix="hotline-open311-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            migrate.upgrade(url)
            yield url
        return
    import psycopg

    from tests.services import postgres_server

    host, port = postgres_server()
    name = f"bench_open311_{os.getpid()}_{label}"
    admin = f"host={host} port={port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgresql+psycopg://postgres@{host}:{port}/{name}"
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare_post(url: str) -> dict[str, Any]:
    """The demo city, an operator's API token and an Open311 client's key."""
    from accounts.models import Role
    from dispatch.units import create_user
    from hotline.open311 import clients, services

    common.seed(url, now=NOW, n_rules=0)
    engine = make_engine(url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            _, token = create_user(
                session,
                username="bench.operator",
                display_name="压测话务员",
                role=Role.operator,
                unit_code="CENTRE",
                now=NOW,
            )
            _, key = clients.issue(session, name="压测合作方系统", actor="bench", now=NOW)
            codes = [s.code for s in services.catalogue(session).services]
    finally:
        engine.dispose()
    return {"token": token, "api_key": key, "service_codes": codes}


# ---------------------------------------------------------------- GET: queries and answers


def get_params(code: str, page: int, page_size: int = PAGE_SIZE) -> dict[str, str]:
    return {"service_code": code, "status": "open", "page": str(page),
            "page_size": str(page_size)}  # fmt: skip


def get_queries(codes: tuple[str, ...] = GET_CODES) -> list[dict[str, str]]:
    return [get_params(code, page) for code in codes for page in GET_PAGES]


def expected_ids(engine: Engine, params: dict[str, str], now: datetime = NOW) -> list[str]:
    """The request ids a GET should answer, straight from the ticket table: not
    confidential, taken in the 90 days up to ``now``, the service code, an open status;
    newest first, the asked page."""
    from hotline.open311.mapping import OPEN_STATUSES
    from tickets.models import Ticket

    t = Ticket.__table__.c  # type: ignore[attr-defined]
    size, page = int(params["page_size"]), int(params["page"])
    stmt = (
        select(t.number)
        .where(
            t.confidential.is_(False),
            t.created_at >= now - timedelta(days=90),
            t.created_at <= now,
            t.category_code == params["service_code"],
            t.status.in_(sorted(s.value for s in OPEN_STATUSES)),
        )
        .order_by(t.created_at.desc(), t.id.desc())
        .offset((page - 1) * size)
        .limit(size)
    )
    with engine.connect() as conn:
        return [str(n) for n in conn.execute(stmt).scalars()]


def check_answers(base_url: str, engine: Engine, queries: list[dict[str, str]]) -> dict[str, Any]:
    """Every query's ids against the tickets; how many requests the pages held."""
    import httpx

    mismatched, shown = [], 0
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for params in queries:
            response = client.get("/open311/v2/requests.json", params=params)
            response.raise_for_status()
            got = [r["service_request_id"] for r in response.json()]
            statuses = {r["status"] for r in response.json()}
            shown += len(got)
            if got != expected_ids(engine, params) or statuses - {"open"}:
                mismatched.append(params)
    return {"queries": len(queries), "requests_shown": shown, "mismatched": mismatched}


def explain(url: str, params: dict[str, str]) -> dict[str, Any]:
    """The list query hotline.open311.requests sends for ``params``, under EXPLAIN ANALYZE
    (PostgreSQL), captured from the service layer itself."""
    from dispatch.calendar import DEFAULT_TZ
    from hotline.open311 import requests

    engine = make_engine(url)
    sent: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM ticket" in statement and "ORDER BY" in statement:
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        factory = make_session_factory(engine)
        query = requests.parse_query(params)
        with factory() as session:
            started = time.perf_counter()
            requests.list_requests(session, query=query, now=NOW, tz=DEFAULT_TZ)
            in_process_ms = (time.perf_counter() - started) * 1000
        event.remove(engine, "before_cursor_execute", capture)
        statement, parameters = sent[-1]
        with engine.connect() as conn:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
            plan = [row[0] for row in cursor.fetchall()]
    finally:
        engine.dispose()
    return {"params": params, "in_process_ms": round(in_process_ms, 3), "plan": plan}


# ---------------------------------------------------------------- measuring


def _ms(values: list[float], q: float) -> float:
    return round(percentile([v * 1000 for v in values], q), 3)


POST_KINDS = ("api", "json", "xml")
POST_SLICE = 100  # requests of one kind sent in a row


def post_run(
    server: web.Server, sends: dict[str, web.Send], n: int, concurrency: int, run: int
) -> dict[str, Any]:
    """One run of the three POST kinds: ``n`` requests each, sent in slices of about POST_SLICE
    that interleave the kinds (the order rotating slice by slice and run by run), so that
    a burst of other work on the shared machine hits all three alike."""
    wall = dict.fromkeys(POST_KINDS, 0.0)
    cpu = dict.fromkeys(POST_KINDS, 0.0)
    latencies: dict[str, list[float]] = {kind: [] for kind in POST_KINDS}
    failures: dict[str, Counter[str]] = {kind: Counter() for kind in POST_KINDS}
    rounds = max(1, round(n / POST_SLICE))
    for r in range(rounds):
        lo, hi = r * n // rounds, (r + 1) * n // rounds
        turn = (run + r) % 3
        for kind in POST_KINDS[turn:] + POST_KINDS[:turn]:
            got = web.drive(server.base_url, web.offset(sends[kind], lo), hi - lo,
                            concurrency=concurrency, expect=201,
                            server_pid=server.proc.pid)  # fmt: skip
            wall[kind] += (hi - lo) / got["rate"]
            cpu[kind] += got["server_cpu_ms"] * (hi - lo)
            latencies[kind] += got["latency"]
            failures[kind].update(got["failures"])
    out: dict[str, Any] = {}
    for kind in POST_KINDS:
        out[f"{kind}_per_s"] = round(n / wall[kind], 1)
        out[f"{kind}_p95_ms"] = _ms(latencies[kind], 95)
        out[f"{kind}_server_cpu_ms"] = round(cpu[kind] / n, 3)
        out[f"{kind}_failures"] = dict(failures[kind])
    out["post_requests_ratio"] = round(
        min(out["json_per_s"], out["xml_per_s"]) / out["api_per_s"], 3
    )
    # the same, from the server's CPU per request (less sensitive to the machine's load)
    out["post_cpu_ratio"] = round(
        out["api_server_cpu_ms"] / max(out["json_server_cpu_ms"], out["xml_server_cpu_ms"]), 3
    )
    return out


def get_run(servers: dict[str, web.Server], repeats: int) -> dict[str, Any]:
    """``repeats`` rounds of every query, one request at a time, alternating the cities."""
    import httpx

    queries = get_queries()
    times: dict[str, list[float]] = {name: [] for name in servers}
    failures: dict[str, int] = dict.fromkeys(servers, 0)
    clients = {n: httpx.Client(base_url=s.base_url, timeout=60) for n, s in servers.items()}
    cpu = {name: common.cpu_seconds(s.proc.pid) for name, s in servers.items()}
    try:
        for _ in range(repeats):
            for params in queries:
                for name, client in clients.items():
                    t0 = time.perf_counter()
                    response = client.get("/open311/v2/requests.json", params=params)
                    times[name].append(time.perf_counter() - t0)
                    failures[name] += response.status_code != 200
    finally:
        for client in clients.values():
            client.close()
    for name, server in servers.items():
        cpu[name] = common.cpu_seconds(server.proc.pid) - cpu[name]
    return {
        name: {
            "get_p50_ms": round(statistics.median(t) * 1000, 3),
            "get_p95_ms": _ms(t, 95),
            "get_max_ms": _ms(t, 100),
            "get_n": len(t),
            "get_failures": failures[name],
            # the server's CPU per request: on a shared machine, wall time is this stretched
            "get_server_cpu_ms": round(cpu[name] * 1000 / len(t), 3),
        }
        for name, t in times.items()
    }


def measure_backend(
    db: str, *, tickets: int, baseline: int, posts: int, concurrency: int, repeats: int,
    runs: int, defer: bool = True,
) -> dict[str, Any]:  # fmt: skip
    payloads = [
        d.model_dump(mode="json", exclude_none=True)
        for d in common.request_texts(posts * runs + 20, n_rules=0, seed_value=311)
    ]
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="open311-")))
        post_url = stack.enter_context(database(db, "post"))
        keys = prepare_post(post_url)
        codes = keys["service_codes"]
        forms = [
            web.open311_form(p, api_key=keys["api_key"], service_code=codes[i % len(codes)])
            for i, p in enumerate(payloads)
        ]
        urls, engines, load_s = {}, {}, {}
        for name, n in (("baseline", baseline), ("full", tickets)):
            urls[name] = stack.enter_context(database(db, str(n)))
            engines[name] = make_engine(urls[name])
            stack.callback(engines[name].dispose)
            say(f"{db}: generating and loading {n:,} tickets")
            loaded = load(engines[name], Shape(tickets=n, events=3 * n, now=NOW))
            load_s[name] = round(loaded.load_s, 1)
            say(f"{db}: loaded in {loaded.load_s:.1f} s")
        broker = stack.enter_context(web.deferred_broker()) if defer else None
        servers = {"post": web.Server("post", post_url, NOW, workdir, broker)}
        servers |= {name: web.Server(name, urls[name], NOW, workdir) for name in urls}
        for server in servers.values():
            stack.callback(server.stop)
        for server in servers.values():
            server.wait_ready()

        checks = {name: check_answers(servers[name].base_url, engines[name], get_queries())
                  for name in urls}  # fmt: skip
        say(f"{db}: answers checked {checks}")
        # warm-up: connections, caches, the catalogue
        web.drive(servers["post"].base_url, web.api_ticket(payloads[-20:], keys["token"]), 20,
                  concurrency=concurrency, expect=201)  # fmt: skip
        for fmt in ("json", "xml"):
            web.drive(servers["post"].base_url, web.open311_post(forms[-20:], fmt), 20,
                      concurrency=concurrency, expect=201)  # fmt: skip
        get_run({n: servers[n] for n in urls}, 1)

        per_run: list[dict[str, Any]] = []
        for run in range(runs):
            say(f"{db}: run {run + 1}/{runs}")
            batch = slice(run * posts, (run + 1) * posts)
            sends = {
                "api": web.api_ticket(payloads[batch], keys["token"]),
                "json": web.open311_post(forms[batch], "json"),
                "xml": web.open311_post(forms[batch], "xml"),
            }
            load_before = os.getloadavg()[0]
            figures = post_run(servers["post"], sends, posts, concurrency, run)
            figures["get"] = get_run({n: servers[n] for n in urls}, repeats)
            figures["loadavg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            say(f"{db}: {figures}")
            per_run.append(figures)

        result = combine(per_run, baseline)
        result["duplicates"] = (
            web.deferred_work(broker, post_url, NOW) if broker else {"compared": "inline"}
        )
        result |= {"tickets": tickets, "baseline": baseline, "load_s": load_s,
                   "answers_checked": checks, "runs": per_run}  # fmt: skip
        if db == "postgres":
            result["explain"] = explain(urls["full"], get_queries()[0])
            with engines["full"].connect() as conn:
                result["postgres_version"] = conn.exec_driver_sql("SHOW server_version").scalar()
        return result


def combine(runs: list[dict[str, Any]], baseline: int) -> dict[str, Any]:
    """Medians over the runs and the worst run."""

    def over(values: list[float], worse: Any) -> dict[str, float]:
        return {"median": round(statistics.median(values), 3), "worst": worse(values)}

    out: dict[str, Any] = {
        "post_requests_per_s": {
            kind: over([r[f"{kind}_per_s"] for r in runs], min) for kind in POST_KINDS
        },
        "post_requests_ratio": over([r["post_requests_ratio"] for r in runs], min),
        "post_cpu_ratio": over([r["post_cpu_ratio"] for r in runs], min),
        "post_server_cpu_ms": {
            kind: round(statistics.median(r[f"{kind}_server_cpu_ms"] for r in runs), 3)
            for kind in POST_KINDS
        },
    }
    for name in ("full", "baseline"):
        for key in ("get_p50_ms", "get_p95_ms", "get_server_cpu_ms"):
            out[f"{key}_{name}"] = over([r["get"][name][key] for r in runs], max)
    out[f"get_p95_ratio_vs_{baseline}"] = round(
        out["get_p95_ms_full"]["worst"] / out["get_p95_ms_baseline"]["worst"], 2
    )
    return out


def figures(backends: dict[str, dict[str, Any]], **sizes: int) -> dict[str, Any]:
    """The top-level keys: the worst run of the worse backend."""
    out: dict[str, Any] = {"bench": "open311", **sizes}
    out["post_requests_per_s"] = {
        fmt: min(b["post_requests_per_s"][fmt]["worst"] for b in backends.values())
        for fmt in ("json", "xml")
    }
    out["api_tickets_per_s"] = min(
        b["post_requests_per_s"]["api"]["worst"] for b in backends.values()
    )
    out["post_requests_ratio"] = min(b["post_requests_ratio"]["worst"] for b in backends.values())
    out["post_cpu_ratio"] = min(b["post_cpu_ratio"]["worst"] for b in backends.values())
    out["get_requests_p95_ms"] = max(b["get_p95_ms_full"]["worst"] for b in backends.values())
    out["get_requests_p95_ms_by_backend"] = {
        db: {"tickets": b["tickets"], "worst": b["get_p95_ms_full"]["worst"],
             "median": b["get_p95_ms_full"]["median"]}
        for db, b in backends.items()
    }  # fmt: skip
    out["targets"] = verdicts(out, TARGETS)
    return out | {"backends": backends, "machine": machine()}


def report(
    *, dbs: list[str], tickets: dict[str, int], defer: bool = True, **plan: int
) -> dict[str, Any]:
    backends = {db: measure_backend(db, tickets=tickets[db], defer=defer, **plan) for db in dbs}
    return figures(backends, **plan)


def _readable(result: dict[str, Any]) -> None:
    for key, verdict in result["targets"].items():
        print(f"{key:>20}: {verdict['value']} (target {verdict['target']}, met: {verdict['met']})")
    print(f"{'post_requests_per_s':>20}: {result['post_requests_per_s']}, "
          f"API {result['api_tickets_per_s']}")  # fmt: skip
    for db, b in result["backends"].items():
        print(f"{db:>8}: GET p95 {b['tickets']:,} tickets {b['get_p95_ms_full']} ms, "
              f"{b['baseline']:,} tickets {b['get_p95_ms_baseline']} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--sqlite-tickets", type=int, help="default: --tickets")
    parser.add_argument("--baseline", type=int, default=10_000)
    parser.add_argument("--db", choices=("sqlite", "postgres"), action="append")
    parser.add_argument("--posts", type=int, default=1000, help="per kind per run")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument("--get-repeats", type=int, default=10, help="rounds of 6 queries")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", metavar="DB_URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--now", help=argparse.SUPPRESS)
    parser.add_argument(
        "--broker",
        default="redis",
        help="'redis' (default: production's way, the duplicate comparison by a worker, "
        "timed apart) or 'none' (compared inline, as the embedded platform does)",
    )
    args = parser.parse_args()
    if args.serve:
        web.serve(
            args.serve,
            args.port,
            datetime.fromisoformat(args.now),
            # a server started without --broker (the GET cities) has none
            args.broker if "://" in args.broker else None,
        )
        return
    dbs = args.db or ["postgres", "sqlite"]
    result = report(
        dbs=dbs,
        tickets={"postgres": args.tickets, "sqlite": args.sqlite_tickets or args.tickets},
        baseline=args.baseline,
        posts=max(10, min(args.posts, 5000)),
        concurrency=max(1, min(args.concurrency, 16)),
        repeats=max(1, min(args.get_repeats, 200)),
        runs=max(1, min(args.runs, 5)),
        defer=args.broker not in ("", "none"),
    )
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        _readable(result)


if __name__ == "__main__":
    main()
