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
from tickets.models import IdempotencyKey, Ticket, TicketEvent
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
