"""The one filter every figure takes (period, unit with its children, category, district,
channel) and the SQL it becomes, applied identically to every figure."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlmodel import Session

from core.db import table_of
from core.errors import InvalidInput, NotFound
from dispatch.models import Assignment, AssignmentRole, Unit
from tickets.models import Channel, Ticket

T = table_of(Ticket)
A = table_of(Assignment)
_UNIT = table_of(Unit)
_CATEGORY = re.compile(r"^[0-9]{1,12}$")


@dataclass(frozen=True)
class Filters:
    """Which tickets a figure counts. A ticket is in the period when it was taken in
    (``ticket.created_at``) at or after ``start`` and before ``end``; calls when they
    arrived. ``unit_id`` means that unit and every unit below it (``unit.parent_id``).
    ``category_prefix`` matches the national category code's leading digits (``"02"`` is
    every 02xxxx category). None means any."""

    start: datetime
    end: datetime
    unit_id: int | None = None
    category_prefix: str | None = None
    district: str | None = None
    channel: Channel | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                raise InvalidInput(f"{name} needs a time zone", field=name)
        if self.end <= self.start:
            raise InvalidInput("the period's end must be after its start", field="end")
        if self.category_prefix is not None and not _CATEGORY.match(self.category_prefix):
            raise InvalidInput(
                "a category prefix is 1 to 12 digits of the national code",
                field="category_prefix",
            )
        if self.channel is not None:
            object.__setattr__(self, "channel", Channel(self.channel))


@dataclass(frozen=True)
class Scope:
    """Filters resolved against the database: the unit ids it covers (None: every unit)."""

    filters: Filters
    unit_ids: tuple[int, ...] | None

    def ticket_where(self, *, with_unit: bool = True) -> list[ColumnElement[bool]]:
        """The conditions on a ticket row (``T``); with the unit's condition as an EXISTS
        over its lead assignments unless the caller joins the assignments itself."""
        f = self.filters
        where: list[ColumnElement[bool]] = [T.c.created_at >= f.start, T.c.created_at < f.end]
        if f.category_prefix is not None:
            where.append(T.c.category_code.startswith(f.category_prefix, autoescape=True))
        if f.district is not None:
            where.append(T.c.district == f.district)
        if f.channel is not None:
            where.append(T.c.channel == f.channel)
        if with_unit and self.unit_ids is not None:
            # the unit's lead assignments since the period began (a ticket's assignments
            # start after its intake): read once on (unit_id, ...), not probed per ticket
            leads = select(A.c.ticket_id).where(
                A.c.role == AssignmentRole.lead,
                A.c.unit_id.in_(self.unit_ids),
                A.c.started_at >= f.start,
            )
            where.append(T.c.id.in_(leads))
        return where

    def assignment_where(self) -> list[ColumnElement[bool]]:
        """The conditions on a lead assignment (``A``) joined to its ticket (``T``)."""
        # a ticket's assignments start after its intake: bounded by the period's start, the
        # period's lead assignments are one range of (role, started_at)
        where = [
            A.c.role == AssignmentRole.lead,
            A.c.started_at >= self.filters.start,
            *self.ticket_where(with_unit=False),
        ]
        if self.unit_ids is not None:
            where.append(A.c.unit_id.in_(self.unit_ids))
        return where


def resolve(session: Session, filters: Filters) -> Scope:
    """The filters with the unit expanded to itself and all its descendants."""
    if filters.unit_id is None:
        return Scope(filters, None)
    rows = session.execute(select(_UNIT.c.id, _UNIT.c.parent_id)).all()
    ids = subtree(filters.unit_id, ((row.id, row.parent_id) for row in rows))
    if not ids:
        raise NotFound(f"unit {filters.unit_id} does not exist", unit_id=filters.unit_id)
    return Scope(filters, ids)


def subtree(root: int, edges: Iterable[tuple[int, int | None]]) -> tuple[int, ...]:
    """``root`` and every unit below it, from (id, parent_id) pairs; empty if there is no
    such unit. A cycle in bad data ends the walk rather than looping."""
    children: dict[int | None, list[int]] = {}
    known: set[int] = set()
    for ident, parent in edges:
        known.add(ident)
        children.setdefault(parent, []).append(ident)
    if root not in known:
        return ()
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return tuple(sorted(found))
