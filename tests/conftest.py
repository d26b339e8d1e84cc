from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from core.clock import FrozenClock
from core.db import make_engine
from hotline.tables import metadata
from tests import services

# Settings refuse the default secret outside development; the test run has its own.
os.environ.setdefault("HOTLINE_SECRET_KEY", f"test-run-{secrets.token_urlsafe(32)}")

# 10:00 Beijing time on Friday 27 November 2026
START = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        choices=["sqlite", "postgres"],
        help="database backends to run against (default: both)",
    )


def _backends(config: pytest.Config) -> list[str]:
    return config.getoption("--backend") or ["sqlite", "postgres"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _backends(metafunc.config), scope="session")


@pytest.fixture(scope="session")
def db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'core.db'}"
        return
    url, drop = services.create_database()
    yield url
    drop()


@pytest.fixture
def fresh_db_url(backend: str, tmp_path) -> Iterator[str]:
    """A database of this test's own, for code that must really commit (races, several
    processes): a SQLite file, or a PostgreSQL database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url, drop = services.create_database("hotline_fresh")
    yield url
    drop()


@pytest.fixture(scope="session")
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test; the code under
    test may commit freely (commits become savepoint releases)."""
    conn = engine.connect()
    trans = conn.begin()
    sess = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield sess
    finally:
        sess.close()
        if trans.is_active:
            trans.rollback()
        conn.close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url, release = services.claim_redis_index()
    yield url
    release()


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> object:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not reached within {timeout}s")
        time.sleep(interval)


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id with its smallest cost in tests (the same algorithm and code path; hashes
    carry their parameters). tests/accounts/test_signin.py checks the production cost."""
    from argon2 import PasswordHasher

    from accounts import signin

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(signin, "_hasher", cheap)
    monkeypatch.setattr(signin, "_DUMMY_HASH", cheap.hash("dummy"))
