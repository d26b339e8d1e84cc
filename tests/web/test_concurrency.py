"""Races need real commits from real concurrent transactions, so these tests run on a
database of their own instead of the rolled-back per-test transaction."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dispatch import accounts
from dispatch.models import Assignment, Role
from hotline.config import Settings
from hotline.db import make_engine, make_session_factory, session_scope
from hotline.models import metadata
from hotline import pipeline
from tickets.models import IdempotencyKey, Ticket, TicketCounter, TicketCreate, TicketEvent
from web.app import create_app


@pytest.fixture
def committing(fresh_db_url, clock) -> Iterator[tuple]:
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        _, token = accounts.create_user(session, username="op", display_name="op",
                                        role=Role.operator, now=clock.now())
    app = create_app(settings=Settings(environment="test"), session_factory=factory,
                     clock=clock)
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
        return client.post("/api/v1/tickets", json={"description": "小区停水"},
                           headers={**headers, "Idempotency-Key": "call-7"})

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
                numbers.append(pipeline.submit(session, data=TicketCreate(description="小区停水"),
                                               actor=None, now=clock.now()).ticket.number)
        return numbers

    with ThreadPoolExecutor(racers) as pool:
        numbers = [n for batch in pool.map(intake, range(racers)) for n in batch]
    assert sorted(numbers) == [f"20261127-{i:06d}" for i in range(1, racers * each + 1)]


def test_given_a_day_past_a_million_tickets_then_the_number_grows_a_digit(committing, clock):
    _, factory, _ = committing
    with session_scope(factory) as session:
        session.add(TicketCounter(day="20261127", last=999_999))
    with session_scope(factory) as session:
        number = pipeline.submit(session, data=TicketCreate(description="路灯不亮"), actor=None,
                                 now=clock.now()).ticket.number
    assert number == "20261127-1000000"
