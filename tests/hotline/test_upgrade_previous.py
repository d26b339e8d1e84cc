"""A database made by an earlier main upgrades in place with `hotline db upgrade`, and the
platform reads and writes it afterwards, on both backends.

The fixtures in data/ are dumps (`sqlite3 .dump`; `pg_dump --inserts --no-owner`) of databases
built with main at 7e1124d — the code before the packages were rearranged into core/,
accounts/ and cli/ — by migrating to its head, seeding the demo city, taking three tickets
through intake, signing one for, recording a phone call with its transcript and sweeping the
escalations three days on."""

from __future__ import annotations

import gzip
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from accounts.models import Role, User
from core.db import make_engine, make_session_factory, session_scope
from dispatch.models import Assignment, Escalation, Unit
from hotline import intake, migrate
from telephony.models import CallRecord
from tickets.models import Ticket, TicketCreate, TicketEvent

DATA = Path(__file__).parent / "data"
REVISION_THEN = "0003"  # the head of 7e1124d's migrations
NUMBERS = ["20261201-000001", "20261201-000002", "20261201-000003"]


def load_previous(url: str, backend: str) -> None:
    script = gzip.decompress((DATA / f"main-7e1124d.{backend}.sql.gz").read_bytes()).decode()
    parsed = make_url(url)
    if backend == "sqlite":
        assert parsed.database is not None
        with sqlite3.connect(parsed.database) as db:
            db.executescript(script)
        return
    # pg_dump writes psql meta-commands (`\restrict KEY` … `\unrestrict KEY`) around the
    # dump; they are psql's, not SQL the server takes.
    sql = "\n".join(line for line in script.split("\n") if not line.startswith("\\"))
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as db:
        db.execute(sql)


def test_given_a_database_of_the_previous_main_when_db_upgrade_then_the_platform_uses_it(
    fresh_db_url, backend, tmp_path
):
    load_previous(fresh_db_url, backend)
    assert migrate.current(fresh_db_url) is not None
    assert migrate.current(fresh_db_url).startswith(REVISION_THEN)

    env = {**os.environ, "HOTLINE_DATABASE_URL": fresh_db_url, "HOTLINE_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert migrate.current(fresh_db_url) == migrate.head()
    assert migrate.differences(fresh_db_url) == []
    factory = make_session_factory(make_engine(fresh_db_url))
    with session_scope(factory) as session:
        numbers = session.scalars(select(Ticket.number).order_by(Ticket.number)).all()
        assert [n for n in numbers if n in NUMBERS] == NUMBERS
        assert session.scalar(select(func.count()).select_from(Unit)) > 10
        assert session.scalar(select(func.count()).select_from(Escalation)) > 0
        assert session.scalar(select(func.count()).select_from(TicketEvent)) > 0
        call = session.scalars(select(CallRecord)).one()
        assert call.call_id == "upgrade-fixture-call@hotline.test" and call.ticket_id is not None
        handler = session.scalars(select(User).where(User.role == Role.handler)).first()
        assert handler is not None and handler.unit_id is not None
        signed = session.scalars(select(Assignment).where(Assignment.signed_at.is_not(None)))
        assert signed.first() is not None
    with session_scope(factory) as session:
        submission = intake.submit(
            session,
            data=TicketCreate(description="小区停水了，请尽快处理"),
            actor=None,
            now=datetime(2026, 12, 4, 2, 0, tzinfo=UTC),
        )
        assert submission.ticket.number == "20261204-000001"
