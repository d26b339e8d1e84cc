"""bench/pipeline.py's HTTP intake: the real app and a bare FastAPI app doing one INSERT, each
served by uvicorn in a child process (`pipeline.py --serve`), driven by the same client."""

from __future__ import annotations

import pstats
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from accounts.models import Role
from bench import _common as common
from bench._pipeline_plan import N_RULES, NOW, Plan, bench_settings
from bench._profiling import ThreadProfiles, hot_spots
from core.db import make_engine, make_session_factory, session_scope
from dispatch.units import create_user
from tickets.models import TicketCreate

PIPELINE = Path(__file__).resolve().parent / "pipeline.py"  # runs the servers (--serve)
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


def hotline_app(url: str) -> Any:
    from core.clock import FrozenClock
    from web.app import create_app

    return create_app(
        settings=bench_settings(url),
        session_factory=make_session_factory(make_engine(url)),
        clock=FrozenClock(NOW),
    )


def serve(kind: str, url: str, port: int, profile_out: str | None) -> None:
    """Child process: one uvicorn worker serving `kind` until SIGTERM."""
    import uvicorn

    app = hotline_app(url) if kind == "hotline" else bare_app(url)
    profiles = ThreadProfiles() if profile_out else None
    if profiles:
        # uvicorn re-raises the SIGTERM it caught once it has shut down; without a handler
        # of ours that would end the process before the profile is written.
        signal.signal(signal.SIGTERM, lambda *_: None)
        profiles.start()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    if profiles and profile_out:
        profiles.dump(profile_out)


class Server(common.ChildServer):
    def __init__(self, kind: str, url: str, workdir: Path, profile: bool) -> None:
        from tests.services import free_port

        self.kind = self.label = kind
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.profile_out = str(workdir / f"{kind}.pstats") if profile else None
        self.log = workdir / f"{kind}.log"
        command = [
            sys.executable,
            str(PIPELINE),
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
        # the profiled time pstats keeps; typeshed does not declare it
        result["profile"] = hot_spots(stats, wall=stats.total_tt)  # type: ignore[attr-defined]
        result["profile"]["note"] = "shares of the server's CPU time, all threads"
    return result
