"""The figures' summary tables on a generated city (bench/_analytics_data.py: 3,000 tickets
over 90 days with their assignments and audit, a seed of this test's own), on SQLite and
PostgreSQL: read through the summaries, every figure, unit rate, SLA-by-unit row and 超期 day
is the exact scan's under several filters; then tickets change (signed, replied, completed
and called back, returned, reclassified, new ones taken in and dispatched) and the clock
moves two days: equal before the refresh (changed days counted live, passed deadlines judged
again) and after it, and the incremental refresh agrees with a full rebuild."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench._analytics_data import Shape, load, units  # noqa: E402
from core.db import make_engine, make_session_factory, table_of  # noqa: E402
from dispatch.models import Assignment, AssignmentRole, AssignmentStatus  # noqa: E402
from hotline.figures import Filters  # noqa: E402
from hotline.figures import summary as s  # noqa: E402
from hotline.figures import summary_read as sr  # noqa: E402
from hotline.figures.filters import resolve  # noqa: E402
from hotline.tables import metadata  # noqa: E402
from tests.hotline.summary_checks import assert_same, event  # noqa: E402
from tickets.lifecycle import Action  # noqa: E402
from tickets.models import Channel, Satisfaction, Status, Ticket  # noqa: E402

A = table_of(Assignment)
T = table_of(Ticket)
NOW = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)  # 09:00 Beijing time
SHAPE = Shape(tickets=3_000, events=9_000, now=NOW, days=90, seed=1826)
UNITS = {u[1]: u[0] for u in units()}


def _local_midnight(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC) - timedelta(hours=8)


OCTOBER = _local_midnight(2026, 10, 1)
NOVEMBER = _local_midnight(2026, 11, 1)
DECEMBER = _local_midnight(2026, 12, 1)
AHEAD = _local_midnight(2026, 12, 10)


def combos() -> list[Filters]:
    return [
        Filters(start=NOVEMBER, end=DECEMBER),
        Filters(start=OCTOBER, end=AHEAD),
        Filters(start=NOVEMBER, end=AHEAD, unit_id=UNITS["D00"]),
        Filters(start=NOVEMBER, end=AHEAD, unit_id=UNITS["TRANSPORT"]),
        Filters(start=OCTOBER, end=AHEAD, category_prefix="08"),
        Filters(start=OCTOBER, end=AHEAD, district="榆阳区", channel=Channel.phone),
        Filters(start=NOVEMBER, end=AHEAD, unit_id=UNITS["CENTRE"], category_prefix="0201"),
        Filters(start=DECEMBER - timedelta(days=1), end=AHEAD),
    ]


@pytest.fixture
def engine(fresh_db_url: str) -> Iterator[Engine]:
    eng = make_engine(fresh_db_url)
    metadata.create_all(eng)
    load(eng, SHAPE)
    yield eng
    eng.dispose()


def everything(engine: Engine, now: datetime) -> list[dict[str, Any]]:
    with make_session_factory(engine)() as session:
        return [assert_same(session, filters, now) for filters in combos()]


def _open_leads(session: Session, *where: Any) -> list[Any]:
    return list(
        session.execute(
            select(A.c.id, A.c.ticket_id)
            .where(A.c.role == AssignmentRole.lead, A.c.ended_at.is_(None), *where)
            .order_by(A.c.id.desc())
            .limit(3)
        )
    )


def change(session: Session, at: datetime) -> None:
    """A few hours of a centre's work, each change with its audit event."""
    for aid, tid in _open_leads(session, A.c.signed_at.is_(None)):
        session.execute(
            update(A).where(A.c.id == aid).values(signed_at=at, status=AssignmentStatus.signed)
        )
        event(session, tid, Action.sign.value, at)
    for aid, tid in _open_leads(session, A.c.signed_at.is_not(None), A.c.replied_at.is_(None)):
        session.execute(
            update(A).where(A.c.id == aid).values(replied_at=at, status=AssignmentStatus.replied)
        )
        event(session, tid, Action.reply.value, at)
    for aid, tid in _open_leads(session, A.c.replied_at.is_not(None)):
        session.execute(
            update(A).where(A.c.id == aid).values(ended_at=at, status=AssignmentStatus.completed)
        )
        session.execute(
            update(T)
            .where(T.c.id == tid)
            .values(status=Status.closed, satisfaction=Satisfaction.dissatisfied, closed_at=at)
        )
        event(session, tid, Action.approve_reply.value, at)
        event(session, tid, Action.callback.value, at)
    for aid, tid in _open_leads(session, A.c.signed_at.is_(None))[:1]:
        session.execute(
            update(A)
            .where(A.c.id == aid)
            .values(return_reason_code="not-ours", status=AssignmentStatus.returned)
        )
        session.execute(update(T).where(T.c.id == tid).values(return_count=T.c.return_count + 1))
        event(session, tid, Action.return_.value, at)
    # an old ticket of a frequent caller reclassified: the repeats after it change
    old = session.execute(
        select(T.c.id, T.c.category_code)
        .where(T.c.caller_phone.is_not(None), T.c.created_at < at - timedelta(days=20))
        .order_by(T.c.created_at.desc())
        .limit(1)
    ).one()
    session.execute(update(T).where(T.c.id == old.id).values(category_code="080301"))
    event(session, old.id, Action.update.value, at)
    # a new ticket, dispatched
    template = session.execute(select(A).where(A.c.role == AssignmentRole.lead).limit(1)).one()
    next_id = int(session.scalar(select(func.max(T.c.id))) or 0) + 1
    session.execute(
        T.insert().values(
            id=next_id, number=f"N{next_id}", channel=Channel.phone, status=Status.dispatched,
            description="x", district="榆阳区", category_code="020101", caller_phone="13900000000",
            created_at=at, updated_at=at,
        )
    )  # fmt: skip
    session.execute(
        A.insert().values(
            id=int(session.scalar(select(func.max(A.c.id))) or 0) + 1, ticket_id=next_id,
            unit_id=UNITS["TRANSPORT"], role=AssignmentRole.lead,
            status=AssignmentStatus.dispatched,
            policy_id=template.policy_id, dispatched_by="test", started_at=at,
            sign_due_at=at + timedelta(hours=1), reply_due_at=at + timedelta(hours=30),
            close_due_at=at + timedelta(days=3),
        )
    )  # fmt: skip
    event(session, next_id, Action.create.value, at)
    event(session, next_id, Action.dispatch.value, at)


def test_given_a_generated_city_when_tickets_change_and_time_passes_then_summary_equals_scan(
    engine: Engine,
) -> None:
    factory = make_session_factory(engine)
    with factory() as session:
        assert s.refresh(session, now=NOW).full
        session.commit()
    initial = everything(engine, NOW)

    at, later = NOW + timedelta(hours=2), NOW + timedelta(days=2)
    with factory() as session:
        change(session, at)
        session.commit()
    with factory() as session:
        plan = sr.plan(session, resolve(session, Filters(start=OCTOBER, end=AHEAD)), later)
        assert plan is not None and plan.live
    before = everything(engine, later)
    with factory() as session:
        done = s.refresh(session, now=later)
        session.commit()
    assert not done.full and 0 < done.days < 90
    after = everything(engine, later)
    with factory() as session:
        s.refresh(session, now=later, full=True)
        session.commit()
    rebuilt = everything(engine, later)

    assert before == after == rebuilt
    assert after[1] != initial[1]  # the changes and the passing time moved the figures
