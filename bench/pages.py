"""How fast are the pages with a big centre's history, and how fast does a change reach the
open tabs?

A database (SQLite file or PostgreSQL) gets the demo city and N synthetic tickets (default
1,000,000: a year of a big city's 12345, 90 % closed) each with its lead assignment and an
event; `hotline web`'s app then runs in a uvicorn child process, as deployed, and an HTTP
client signed in as the dispatcher or a unit's handler measures, sequentially:

  home_p95_ms          GET /              the tickets a person may see, newest first
  queue_p95_ms         GET /queues/manual the manual-dispatch queue
  merge_count_p95_ms   GET /queues/counts/merge  the merge tab's count, loaded by the queue
                       page after itself (reported, no target)
  inbox_p95_ms         GET /inbox         a unit's open work by deadline (as its handler)
  ticket_page_p95_ms   GET /tickets/{id}  a random ticket's page
  sse_fanout_ms_p95    a ticket change (PATCH through the API) → its `tickets` event received
                       by each of 200 open /live streams (time from sending the change)

and `health_p95_ms` (GET /health, no database) in the same run as the baseline: every page
figure is also given as a ratio to it. Targets (issue 16): pages p95 ≤ 150 ms on both
databases, fan-out p95 ≤ 500 ms. A page the build does not have answers 404 and is reported
as null.

    python bench/pages.py --json                 # PostgreSQL, 1,000,000 tickets
    python bench/pages.py --sqlite --json
    python bench/pages.py --tickets 100000       # quicker
    python bench/pages.py --json --repeat 3      # the data loaded once, three web processes:
                                                 # each figure's median, and its _worst
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx
from sqlalchemy import insert, select, text
from sqlmodel import col

from bench import _common as common
from dispatch.models import Assignment, AssignmentRole, AssignmentStatus, SlaPolicy, Unit
from hotline.seed import seed_demo
from tests.services import free_port
from tickets.models import Channel, Status, Ticket, TicketEvent

TARGETS: dict[str, tuple[str, float]] = {
    "home_p95_ms": ("<=", 150),
    "queue_p95_ms": ("<=", 150),
    "inbox_p95_ms": ("<=", 150),
    "ticket_page_p95_ms": ("<=", 150),
    "sse_fanout_ms_p95": ("<=", 500),
}
TEXTS = [
    "小区从昨天早上开始停水，到现在还没来水，家里老人孩子都等着用水",
    "家里暖气一直不热，室温只有十二度，物业说是热力公司的事",
    "路边的井盖没了，晚上黑看不见，已经有人掉下去崴了脚",
    "楼下饭店油烟直排，整栋楼都是油烟味，窗户都不敢开",
    "公司拖欠工资三个月了，老板电话也打不通，二十多个人都没拿到钱",
    "小区门口的路灯坏了一个多月，晚上黑得看不见路",
    "工地晚上十二点还在施工，噪音太大孩子没法睡觉",
    "买的药品过期了，药店不给退，要求按规定赔偿",
]
CHUNK = 20_000
OPEN = (Status.dispatched, Status.signed, Status.in_progress, Status.pending_dispatch)


def populate(url: str, n: int, now: datetime) -> dict[str, Any]:
    """The demo city and `n` tickets over the year before `now`."""
    engine, factory = common.session_factory(url)
    rng = random.Random(12345)
    try:
        with factory() as session:
            seeded = seed_demo(session=session, now=now)
            session.commit()
            units = [
                u.id
                for u in session.scalars(select(Unit))
                if u.code not in ("CENTRE",) and u.id is not None
            ]
            policy = session.scalars(select(SlaPolicy)).first()
            assert policy is not None and policy.id is not None
        span = timedelta(days=365).total_seconds()
        started = time.perf_counter()
        with engine.begin() as conn:
            for base in range(0, n, CHUNK):
                tickets, assignments, events = [], [], []
                for i in range(base, min(base + CHUNK, n)):
                    tid = i + 1
                    created = now - timedelta(seconds=span * (n - i) / n)
                    status = Status.closed if rng.random() < 0.9 else rng.choice(OPEN)
                    text_ = rng.choice(TEXTS)
                    tickets.append(
                        {
                            "id": tid,
                            "number": f"B{tid:010d}",
                            "channel": Channel.phone,
                            "status": status,
                            "caller_phone": f"138{rng.randrange(10**8):08d}",
                            "confidential": False,
                            "address": f"榆阳区人民路{rng.randrange(1, 500)}号",
                            "description": text_,
                            "title": text_[:20],
                            "created_at": created,
                            "updated_at": created,
                            "closed_at": created + timedelta(days=3)
                            if status == Status.closed
                            else None,
                            "return_count": 0,
                            "reopen_count": 0,
                            "event_seq": 1,
                        }
                    )
                    if status != Status.pending_dispatch:
                        assignments.append(
                            {
                                "ticket_id": tid,
                                "unit_id": rng.choice(units),
                                "role": AssignmentRole.lead,
                                "status": AssignmentStatus.completed
                                if status == Status.closed
                                else AssignmentStatus.dispatched,
                                "policy_id": policy.id,
                                "dispatched_by": "bench",
                                "started_at": created,
                                "sign_due_at": created + timedelta(hours=2),
                                "reply_due_at": created + timedelta(days=5),
                                "close_due_at": created + timedelta(days=15),
                                "extension_count": 0,
                            }
                        )
                    events.append(
                        {
                            "ticket_id": tid,
                            "seq": 1,
                            "at": created,
                            "actor": "bench",
                            "action": "create",
                            "to_status": status,
                            "data": {},
                        }
                    )
                conn.execute(insert(Ticket.__table__), tickets)  # type: ignore[attr-defined]
                if assignments:
                    conn.execute(insert(Assignment.__table__), assignments)  # type: ignore[attr-defined]
                conn.execute(insert(TicketEvent.__table__), events)  # type: ignore[attr-defined]
                if base % (CHUNK * 10) == 0:
                    common.say(f"  {base + len(tickets):,} tickets")
            if engine.dialect.name == "postgresql":
                for table in ("ticket", "assignment", "ticket_event"):
                    conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT max(id) FROM {table}))"
                        )
                    )
        if engine.dialect.name == "postgresql":
            # as autovacuum leaves a settled database: statistics and the visibility map
            # (without it an index-only scan of a bulk-loaded table reads the heap too)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE"))
        else:
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        with factory() as session:
            open_ids = list(
                session.scalars(
                    select(col(Ticket.id))
                    .where(col(Ticket.status).in_([Status.dispatched, Status.signed]))
                    .order_by(col(Ticket.id).desc())
                    .limit(20)
                )
            )
        return {
            "open_ids": open_ids,
            "users": {u["username"]: u for u in seeded["users"]},
            "load_s": round(time.perf_counter() - started, 1),
        }
    finally:
        engine.dispose()


def serve(url: str, data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "HOTLINE_DATABASE_URL": url,
        "HOTLINE_DATA_DIR": str(data_dir),
        "HOTLINE_ENVIRONMENT": "development",
        "HOTLINE_WEB__LOGIN_DELAY_S": "0",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "web.app:create_served_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the web server did not start")


def sign_in(base: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    form = client.get("/signin").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    answer = client.post(
        "/signin",
        data={"username": username, "password": password, "csrf_token": token.group(1)},
    )
    assert answer.status_code == 303, answer.text[:300]
    return client


def timing(client: httpx.Client, paths: list[str], rounds: int) -> dict[str, Any] | None:
    for path in paths[:3]:  # warm
        response = client.get(path)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, (path, response.status_code)
    seconds = []
    for i in range(rounds):
        path = paths[i % len(paths)]
        start = time.perf_counter()
        response = client.get(path)
        seconds.append(time.perf_counter() - start)
        assert response.status_code == 200, (path, response.status_code)
    return common.summary_ms(seconds)


async def fanout(
    base: str, cookie: str, token: str, ticket_ids: list[int], tabs: int, label: str = ""
) -> list[float]:
    """Open `tabs` streams, then change each of `ticket_ids` in turn (one change at a time,
    the next once every tab has the last or 10 s passed); each delivery's delay from the
    sending of its change. `label` makes each run's titles new (an unchanged title is no
    change, and no event)."""
    change_of = {ticket_id: k for k, ticket_id in enumerate(ticket_ids)}
    got: dict[int, list[float]] = {k: [] for k in range(len(ticket_ids))}
    sent: dict[int, float] = {}
    ready = asyncio.Event()
    opened = 0
    limits = httpx.Limits(max_connections=tabs + 10, max_keepalive_connections=tabs + 10)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def tab() -> None:
            nonlocal opened
            async with client.stream(
                "GET", "/live", params={"topics": "tickets"}, cookies={"hotline_session": cookie}
            ) as resp:
                name = None
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: ") and name == "hello":
                        opened += 1
                        if opened == tabs:
                            ready.set()
                    elif line.startswith("data: ") and name == "tickets":
                        data = json.loads(line[6:])
                        k = change_of.get(data.get("ticket_id"))
                        if k is not None and data.get("action") == "update":
                            got[k].append(time.perf_counter())

        tasks = [asyncio.create_task(tab()) for _ in range(tabs)]
        await asyncio.wait_for(ready.wait(), 120)
        headers = {"Authorization": f"Bearer {token}"}
        for k, ticket_id in enumerate(ticket_ids):
            sent[k] = time.perf_counter()
            answer = await client.patch(
                f"/api/v1/tickets/{ticket_id}", json={"title": f"改 {label}{k}"}, headers=headers
            )
            assert answer.status_code == 200, answer.text
            deadline = time.perf_counter() + 10
            while len(got[k]) < tabs and time.perf_counter() < deadline:
                await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    delays = [t - sent[k] for k, arrivals in got.items() for t in arrivals]
    missing = tabs * len(ticket_ids) - len(delays)
    if missing:
        common.say(f"  fan-out: {missing} deliveries missing within 10 s")
    return delays


def measure(
    url: str, data_dir: Path, loaded: dict[str, Any], n: int, rounds: int, rep: int
) -> dict[str, Any]:
    """One repetition: a fresh `hotline web` child, signed in anew, each page timed and the
    fan-out measured; the machine's load average before and after (other work on the
    machine moves every figure)."""
    figures: dict[str, Any] = {"load_before": [round(x, 2) for x in os.getloadavg()]}
    users = loaded["users"]
    proc, base = serve(url, data_dir)
    try:
        dispatcher = sign_in(base, "dispatcher", users["dispatcher"]["password"])
        handler = sign_in(base, "water.handler", users["water.handler"]["password"])
        rng = random.Random(7 + rep)
        common.say(f"timing the pages (repetition {rep + 1}) ...")
        pages: dict[str, Any] = {
            "health": timing(dispatcher, ["/health"], rounds),
            "home": timing(dispatcher, ["/", "/?status=dispatched", "/?q=停水"], rounds),
            "queue": timing(dispatcher, ["/queues/manual", "/queues/manual?sort=newest"], rounds),
            # the merge tab's count, which the queue page loads after itself (no target)
            "merge_count": timing(dispatcher, ["/queues/counts/merge"], rounds),
            "inbox": timing(handler, ["/inbox"], rounds),
            "ticket_page": timing(
                dispatcher, [f"/tickets/{rng.randrange(1, n + 1)}" for _ in range(50)], rounds
            ),
        }
        common.say(f"  {json.dumps({k: v and v['p95'] for k, v in pages.items()})}")
        base_p95 = pages["health"]["p95"] if pages["health"] else None
        for name, fig in pages.items():
            figures[f"{name}_p95_ms"] = fig["p95"] if fig else None
            figures[f"{name}_p50_ms"] = fig["p50"] if fig else None
            if fig and base_p95 and name != "health":
                figures[f"{name}_p95_vs_health"] = round(fig["p95"] / base_p95, 1)
        common.say("fan-out to 200 open tabs ...")
        cookie = dispatcher.cookies.get("hotline_session") or ""
        delays = asyncio.run(
            fanout(base, cookie, users["dispatcher"]["token"], loaded["open_ids"], 200, f"{rep}-")
        )
        summary = common.summary_ms(delays) if delays else None
        figures["sse_fanout_ms_p95"] = summary["p95"] if summary else None
        figures["sse_fanout_ms_p50"] = summary["p50"] if summary else None
        figures["sse_deliveries"] = len(delays)
    finally:
        proc.terminate()
        proc.wait(10)
    figures["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return figures


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def run(use_sqlite: bool, n: int, rounds: int, repeat: int = 1) -> dict[str, Any]:
    """The data loaded once, then `repeat` repetitions (see `measure`). Each figure is the
    median of the repetitions, and ``<figure>_worst`` the worst of them; ``repetitions``
    keeps each one with its load averages."""
    now = datetime.now(UTC)
    result: dict[str, Any] = {"machine": common.machine(), "tickets": n, "repeat": repeat}
    with ExitStack() as stack:
        if use_sqlite:
            url = stack.enter_context(common.sqlite_database())
            result["database"] = "sqlite"
        else:
            url = stack.enter_context(common.postgres_database("hotline_bench_pages"))
            result["database"] = "postgresql"
        common.say(f"loading {n:,} tickets into {result['database']} ...")
        loaded = populate(url, n, now)
        result["load_s"] = loaded["load_s"]
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hotline-pages-")))
        reps = [measure(url, data_dir, loaded, n, rounds, rep) for rep in range(repeat)]
    result["repetitions"] = reps
    for key in reps[0]:
        values = [r[key] for r in reps]
        if key.startswith("load_") or any(not isinstance(v, int | float) for v in values):
            continue
        result[key] = _median(values)
        worst = min if key == "sse_deliveries" else max
        result[f"{key}_worst"] = worst(values)
    result["verdicts"] = common.verdicts(result, TARGETS)
    result["verdicts_worst"] = common.verdicts(
        result, {f"{key}_worst": target for key, target in TARGETS.items()}
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--sqlite", action="store_true")
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument(
        "--repeat", type=int, default=1, help="repetitions, each with a fresh web process"
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    result = run(args.sqlite, args.tickets, args.rounds, args.repeat)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
