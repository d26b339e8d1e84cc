"""Races need real commits from real concurrent transactions, so these tests run on a
database of their own instead of the rolled-back per-test transaction."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from accounts.models import Role
from core.db import make_engine, make_session_factory, session_scope
from core.settings import Settings
from dispatch import units
from dispatch.models import Assignment
from hotline import intake as hotline_intake
from hotline.tables import metadata
from tickets.models import IdempotencyKey, Ticket, TicketCounter, TicketCreate, TicketEvent
from web.app import create_app


@pytest.fixture
def committing(fresh_db_url, clock) -> Iterator[tuple]:
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        _, token = units.create_user(
            session, username="op", display_name="op", role=Role.operator, now=clock.now()
        )
    app = create_app(settings=Settings(environment="test"), session_factory=factory, clock=clock)
    try:
        yield app, factory, {"Authorization": f"Bearer {token}"}
    finally:
        engine.dispose()


def test_given_concurrent_posts_with_one_idempotency_key_then_one_ticket(committing):
    app, factory, headers = committing
    racers = 8
    start = threading.Barrier(racers)

    def submit(_: int):
        client = TestClient(app)
        start.wait()
        return client.post(
            "/api/v1/tickets",
            json={"description": "小区停水"},
            headers={**headers, "Idempotency-Key": "call-7"},
        )

    with ThreadPoolExecutor(racers) as pool:
        responses = list(pool.map(submit, range(racers)))

    assert sorted(r.status_code for r in responses) == [200] * (racers - 1) + [201]
    [ticket_id] = {r.json()["ticket"]["id"] for r in responses}
    with session_scope(factory) as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
        assert session.scalar(select(func.count()).select_from(IdempotencyKey)) == 1
        # the losers' savepoints took back their events and assignments with their tickets
        assert set(session.scalars(select(TicketEvent.ticket_id))) == {ticket_id}
        assert set(session.scalars(select(Assignment.ticket_id))) <= {ticket_id}


def test_given_many_concurrent_intakes_then_numbers_are_unique_and_gapless(committing, clock):
    _, factory, _ = committing
    racers, each = 6, 8
    start = threading.Barrier(racers)

    def intake(_: int) -> list[str]:
        start.wait()
        numbers = []
        for _ in range(each):
            with session_scope(factory) as session:
                numbers.append(
                    hotline_intake.submit(
                        session,
                        data=TicketCreate(description="小区停水"),
                        actor=None,
                        now=clock.now(),
                    ).ticket.number
                )
        return numbers

    with ThreadPoolExecutor(racers) as pool:
        numbers = [n for batch in pool.map(intake, range(racers)) for n in batch]
    assert sorted(numbers) == [f"20261127-{i:06d}" for i in range(1, racers * each + 1)]


def test_given_a_day_past_a_million_tickets_then_the_number_grows_a_digit(committing, clock):
    _, factory, _ = committing
    with session_scope(factory) as session:
        session.add(TicketCounter(day="20261127", last=999_999))
    with session_scope(factory) as session:
        number = hotline_intake.submit(
            session, data=TicketCreate(description="路灯不亮"), actor=None, now=clock.now()
        ).ticket.number
    assert number == "20261127-1000000"


def test_given_a_burst_of_intakes_then_at_most_the_configured_number_run_at_once(
    committing, monkeypatch, backend
):
    app, _, headers = committing
    # SQLite takes its write lock when the transaction begins, so intakes queue there anyway.
    expected = 1 if backend == "sqlite" else 2
    assert app.state.settings.web.intake_concurrency == 2
    lock, active, peak = threading.Lock(), [0], [0]
    overflow = threading.Event()
    real_submit = hotline_intake.submit

    def watched(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            if active[0] > expected:
                overflow.set()
        # Stay inside for a while, so that any intake let through beside us is seen here.
        overflow.wait(0.3)
        try:
            return real_submit(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(hotline_intake, "submit", watched)

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/api/v1/tickets", json={"description": f"路灯不亮 {i}"}, headers=headers
                    )
                    for i in range(6)
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [201] * 6
    assert peak[0] == expected
