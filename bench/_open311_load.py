"""bench/open311.py's HTTP side: the real app served by uvicorn in a child process
(`open311.py --serve`), Open311 rate limits raised for the bench (still counted: in Redis
with a broker, as in production), and a bounded client — a few keep-alive `httpx.Client`
threads sharing one list of requests, each sent once."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench import _common as common

OPEN311 = Path(__file__).resolve().parent / "open311.py"  # runs the server (--serve)
# Far above anything a 2-core machine can send: the bench measures the work, not the limit.
BENCH_RATE = 10_000_000


def serve(url: str, port: int, now: datetime, broker: str | None = None) -> None:
    """Child process: one uvicorn worker serving the platform until SIGTERM; with `broker`,
    as production runs it (web and Open311 requests compared with the open tickets by a
    worker: here the tasks wait in the broker, and the bench times that work apart)."""
    import os

    if broker:  # before hotline.worker is imported: its Celery app reads it from there
        os.environ["HOTLINE_BROKER_URL"] = broker
    import uvicorn

    from bench._pipeline_plan import bench_settings
    from core.clock import FrozenClock
    from core.db import make_engine, make_session_factory
    from hotline import public_limits
    from hotline.open311.limits import PostLimits, TokenBucket
    from web.app import create_app

    settings = bench_settings(url)
    if broker:
        settings = settings.model_copy(update={"broker_url": broker})
    app = create_app(
        settings=settings,
        session_factory=make_session_factory(make_engine(url)),
        clock=FrozenClock(now),
    )
    # web/open311.py reads the buckets from app.state (PostLimits.for_settings when unset):
    # with a broker in Redis as production keeps them, each POST's two buckets one script
    # call each, else in the process
    unlimited = (float(BENCH_RATE), BENCH_RATE)
    app.state.open311_limits = (
        PostLimits.shared(
            public_limits.redis_client(broker), per_key=unlimited, per_address=unlimited
        )
        if broker
        else PostLimits(TokenBucket(*unlimited), TokenBucket(*unlimited))
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class Server(common.ChildServer):
    def __init__(
        self, name: str, url: str, now: datetime, workdir: Path, broker: str | None = None
    ) -> None:
        from tests.services import free_port

        self.name = self.label = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        command = [sys.executable, str(OPEN311), "--serve", url, "--port", str(self.port),
                   "--now", now.isoformat()] + (["--broker", broker] if broker else [])  # fmt: skip
        with open(self.log, "w") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


# One request: (client, index) → the response; `expect` is the status that counts as done.
Send = Callable[[httpx.Client, int], httpx.Response]


def drive(
    base_url: str,
    send: Send,
    n: int,
    *,
    concurrency: int,
    expect: int,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Send requests 0..n-1 once each, `concurrency` keep-alive clients at a time."""
    lock = threading.Lock()
    position = iter(range(n))
    latencies: list[float] = []
    failures: Counter[str] = Counter()

    def worker() -> None:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            while True:
                with lock:
                    index = next(position, None)
                if index is None:
                    return
                t0 = time.perf_counter()
                try:
                    response = send(client, index)
                    failed = (
                        None
                        if response.status_code == expect
                        else f"{response.status_code} {response.text[:200]}"
                    )
                except httpx.HTTPError as exc:
                    failed = f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    if failed:
                        failures[failed] += 1

    threads = [threading.Thread(target=worker) for _ in range(max(1, concurrency))]
    server_cpu = common.cpu_seconds(server_pid) if server_pid else 0.0
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {
        "requests": n,
        "rate": n / wall,
        "latency": latencies,
        "failures": dict(failures),
        "server_cpu_ms": round((common.cpu_seconds(server_pid) - server_cpu) * 1000 / n, 3)
        if server_pid
        else None,
    }


def offset(send: Send, start: int) -> Send:
    """``send`` for the requests from ``start`` on: a slice of a longer list."""

    def shifted(client: httpx.Client, i: int) -> httpx.Response:
        return send(client, start + i)

    return shifted


def api_ticket(payloads: Sequence[dict[str, Any]], token: str) -> Send:
    """POST /api/v1/tickets with the operator's bearer token."""
    headers = {"Authorization": f"Bearer {token}"}

    def send(client: httpx.Client, i: int) -> httpx.Response:
        return client.post("/api/v1/tickets", json=payloads[i], headers=headers)

    return send


def open311_post(forms: Sequence[dict[str, str]], fmt: str) -> Send:
    """POST /open311/v2/requests.{fmt}, form-encoded as the spec has it."""

    def send(client: httpx.Client, i: int) -> httpx.Response:
        return client.post(f"/open311/v2/requests.{fmt}", data=forms[i])

    return send


def open311_form(data: dict[str, Any], *, api_key: str, service_code: str) -> dict[str, str]:
    """The same intake as an API ticket, the way a partner system files it."""
    name = data.get("caller_name") or ""
    return {
        "api_key": api_key,
        "service_code": service_code,
        "description": data["description"],
        "address_string": data.get("address") or "榆阳区",
        "last_name": name[:1],
        "first_name": name[1:],
        "phone": data.get("caller_phone") or "",
        "attribute[REQUEST_TYPE]": data.get("request_type", "help"),
    }


# ---------------------------------------------------------------- the comparison by a worker

BENCH_REDIS_DB = 13  # the suite's tests take fresh indexes from 1 up; this one is the bench's
DEFERRED_SAMPLE = 100


@contextmanager
def deferred_broker() -> Iterator[str]:
    """A Redis database for the tasks the web server defers, emptied before and after."""
    import redis

    from tests.services import redis_server

    host, port = redis_server()
    url = f"redis://{host}:{port}/{BENCH_REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def deferred_work(broker: str, db_url: str, now: datetime) -> dict[str, Any]:
    """What the web server left to the workers: the requests waiting in Redis, and the time
    a worker takes for one (`hotline.duplicates.suggest_later`, timed in this process on the
    newest Open311 requests, in sessions rolled back so that the sample stays as it was)."""
    import redis
    from sqlalchemy import select
    from sqlmodel import col

    from core.db import make_engine, make_session_factory
    from hotline import duplicates
    from hotline.duplicates_queue import PENDING_KEY
    from tickets.models import Channel, Ticket

    waiting = int(redis.Redis.from_url(broker).llen(PENDING_KEY))
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    spent: list[float] = []
    recorded = 0
    try:
        with factory() as session:
            ids: list[int] = list(
                session.scalars(
                    select(col(Ticket.id))
                    .where(col(Ticket.channel) == Channel.open311)
                    .order_by(col(Ticket.id).desc())
                    .limit(DEFERRED_SAMPLE)
                )
            )
        for ticket_id in ids:
            with factory() as session:
                t0 = time.perf_counter()
                recorded += duplicates.suggest_later(session, ticket_id=ticket_id, now=now)
                spent.append(time.perf_counter() - t0)
                session.rollback()
    finally:
        engine.dispose()
    return {
        "compared": "by a worker",
        "tasks_waiting": waiting,
        "worker_ms": common.summary_ms(spent) if spent else None,
        "sampled": len(spent),
        "found_duplicates": recorded,
    }
