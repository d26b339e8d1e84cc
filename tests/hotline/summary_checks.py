"""What the summary tests compare (tests/hotline/test_figures_summary*.py): every figure,
unit rate, SLA-by-unit row and the 超期 days, read through the summary tables and by the
exact scan, must be the same numbers."""

from __future__ import annotations

from collections import Counter
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from core.db import table_of
from hotline.figures import Filters, compute, overdue, unit_rates
from hotline.figures import summary_read as sr
from hotline.figures.board import SLA
from hotline.figures.compute import context, per_unit
from hotline.figures.filters import T, resolve
from tickets.models import TicketEvent

E = table_of(TicketEvent)
SH = ZoneInfo("Asia/Shanghai")


def counts(session: Session, filters: Filters, now: datetime, *, summary: bool) -> dict[str, Any]:
    figures = compute(session, filters=filters, now=now, summary=summary)
    ranked = unit_rates(session, filters=filters, now=now, summary=summary)
    late = overdue(session, filters=filters, now=now, summary=summary)
    return {
        "figures": {n: (f.numerator, f.denominator) for n, f in figures.items()},
        "unit_rates": [
            (
                u.unit_id,
                (u.response.numerator, u.response.denominator),
                (u.resolution.numerator, u.resolution.denominator),
                (u.satisfaction.numerator, u.satisfaction.denominator),
                u.band,
                u.rank,
                None if u.score is None else round(u.score, 9),
            )
            for u in ranked
        ],
        "overdue": (late.figure.numerator, late.figure.denominator),
        "late_days": (late.days_total, late.days_max),
    }


def sla_scan(session: Session, filters: Filters, now: datetime) -> dict[int, Any]:
    ctx = context(session, now=now, filters=filters)
    scope = resolve(session, filters)
    return per_unit(session, scope=scope, definitions=[make(ctx) for make in SLA])


def sla_summary(session: Session, filters: Filters, now: datetime) -> dict[int, Any]:
    found = sr.unit_counts(session, resolve(session, filters), now)
    assert found is not None
    names = [make.__name__ for make in SLA]
    return {u: {n: mine[n] for n in names} for u, mine in found.items()}


def assert_same(session: Session, filters: Filters, now: datetime) -> dict[str, Any]:
    """The summary path answers (it is not the scan in disguise) and gives the scan's
    numbers; returns them."""
    scope = resolve(session, filters)
    assert sr.plan(session, scope, now) is not None
    assert sr.unit_counts(session, scope, now) is not None
    if filters.unit_id is None:
        assert sr.ticket_counts(session, scope, now) is not None
    fast = counts(session, filters, now, summary=True)
    exact = counts(session, filters, now, summary=False)
    assert fast["figures"] == exact["figures"]
    assert fast["unit_rates"] == exact["unit_rates"]
    assert fast["overdue"] == exact["overdue"]
    assert fast["late_days"][0] == pytest.approx(exact["late_days"][0], rel=1e-9, abs=1e-9)
    if exact["late_days"][1] is None:
        assert fast["late_days"][1] is None
    else:
        assert fast["late_days"][1] == pytest.approx(exact["late_days"][1], rel=1e-9)
    assert sla_summary(session, filters, now) == sla_scan(session, filters, now)
    if filters.unit_id is None:
        assert sr.tickets_by_day(session, scope, now) == tickets_by_day(session, filters)
    return exact


def tickets_by_day(session: Session, filters: Filters) -> dict[date, int]:
    """Tickets taken in per Beijing day, counted here."""
    found: Counter[date] = Counter()
    for at in session.scalars(
        select(T.c.created_at).where(*resolve(session, filters).ticket_where())
    ):
        found[at.astimezone(SH).date()] += 1
    return dict(sorted(found.items()))


def next_seq(session: Session, ticket_id: int) -> int:
    return (
        int(
            session.scalar(
                select(func.coalesce(func.max(E.c.seq), 0)).where(E.c.ticket_id == ticket_id)
            )
            or 0
        )
        + 1
    )


def event(session: Session, ticket_id: int, action: str, at: datetime) -> None:
    session.add(
        TicketEvent(
            ticket_id=ticket_id,
            seq=next_seq(session, ticket_id),
            at=at,
            actor="test",
            action=action,
        )
    )
    session.flush()
