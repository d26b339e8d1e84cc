"""Real PostgreSQL and Redis for the test run: use the machine's when present, start our own
when absent; either way each run gets a database and a Redis index of its own."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


def _pg_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries are missing: apt-get install postgresql")
    return found[-1].parent


def _start_own_postgres() -> tuple[str, int]:
    """initdb + pg_ctl in a temp dir, as the postgres user when we are root."""
    bindir = _pg_bindir()
    root = Path(tempfile.mkdtemp(prefix="hotline-pg-"))
    data = root / "data"
    port = free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *prefix,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(root / "log"),
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c max_connections=200",
            "start",
        ],
        check=True,
        capture_output=True,
    )

    def stop() -> None:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(stop)
    return "127.0.0.1", port


_pg_server: tuple[str, int] | None = None


def postgres_server() -> tuple[str, int]:
    global _pg_server
    if _pg_server is None:
        host = os.environ.get("HOTLINE_TEST_PG_HOST", "127.0.0.1")
        port = int(os.environ.get("HOTLINE_TEST_PG_PORT", "5432"))
        _pg_server = (host, port) if port_open(host, port) else _start_own_postgres()
    return _pg_server


def create_database(prefix: str = "hotline_test") -> tuple[str, Callable[[], None]]:
    """A fresh database for this run; returns its SQLAlchemy URL and a dropper."""
    host, port = postgres_server()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = f"host={host} port={port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"postgresql+psycopg://postgres@{host}:{port}/{name}", drop


_redis_server: tuple[str, int] | None = None


def redis_server() -> tuple[str, int]:
    global _redis_server
    if _redis_server is None:
        host = os.environ.get("HOTLINE_TEST_REDIS_HOST", "127.0.0.1")
        port = int(os.environ.get("HOTLINE_TEST_REDIS_PORT", "6379"))
        if port_open(host, port):
            _redis_server = (host, port)
        else:
            exe = shutil.which("redis-server")
            if exe is None:
                raise RuntimeError("redis-server is missing: apt-get install redis-server")
            port = free_port()
            workdir = tempfile.mkdtemp(prefix="hotline-redis-")
            proc = subprocess.Popen(
                [
                    exe,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    workdir,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

            def stop() -> None:
                proc.terminate()
                proc.wait(10)
                shutil.rmtree(workdir, ignore_errors=True)

            atexit.register(stop)
            _wait(lambda: port_open("127.0.0.1", port), 20, "redis-server")
            _redis_server = ("127.0.0.1", port)
    return _redis_server


def claim_redis_index() -> tuple[str, Callable[[], None]]:
    """Lock one of Redis's numbered databases (1-15) for this run, so that concurrent runs
    never share keys. The lock lives in db 0 and expires if a run dies."""
    import redis

    host, port = redis_server()
    r = redis.Redis(host=host, port=port, db=0)
    token = uuid.uuid4().hex
    for index in range(1, 16):
        key = f"hotline:test-lock:{index}"
        if r.set(key, token, nx=True, ex=3 * 3600):
            db = redis.Redis(host=host, port=port, db=index)
            db.flushdb()

            def release() -> None:
                db.flushdb()
                if r.get(key) == token.encode():
                    r.delete(key)

            return f"redis://{host}:{port}/{index}", release
    raise RuntimeError("all 15 Redis test indexes are taken by other runs")
