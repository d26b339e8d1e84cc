"""What the centre's queues hold: the tickets waiting for a dispatcher's step (manual
dispatch, returns and replies to review, callbacks due, merge candidates) and the pending
extension requests, each counted and listed newest-first or due-first, a page at a time;
and the escalation board (every step on a live assignment, oldest first).

Read-only queries over the dispatch and ticket tables. They belong in a dispatch service
(``dispatch/queues.py``); they live here until one exists, written as one would be:
module-level functions, keyword arguments, an explicit session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from dispatch.assignments import LIVE
from dispatch.models import (
    Assignment,
    AssignmentRole,
    Escalation,
    ExtensionRequest,
    ExtensionStatus,
    Unit,
)
from tickets.models import Status, Ticket, Urgency

MERGE_WINDOW = timedelta(days=14)  # a duplicate is reported within two weeks of the first
MERGEABLE = (  # README "并单 merge": not yet replied
    Status.intake,
    Status.pending_dispatch,
    Status.dispatched,
    Status.signed,
    Status.in_progress,
    Status.returned,
    Status.reopened,
)
MERGE_PARENTS = tuple(s for s in Status if s not in (Status.closed, Status.archived, Status.merged))


class Queue(StrEnum):
    manual = "manual"  # 待派单
    returns = "returns"  # 退单审核
    extensions = "extensions"  # 延期审批
    replies = "replies"  # 回复审核
    callbacks = "callbacks"  # 待回访
    merge = "merge"  # 疑似重复


class Sort(StrEnum):
    newest = "newest"
    due = "due"


TICKET_STATUS = {
    Queue.manual: Status.pending_dispatch,
    Queue.returns: Status.returned,
    Queue.replies: Status.replied,
    Queue.callbacks: Status.reviewed,
}


@dataclass
class Item:
    """One row of a queue: the ticket, and what the queue knows about it (its lead
    assignment's unit and deadlines, the extension request, the duplicate's original)."""

    ticket: Ticket
    assignment: Assignment | None = None
    unit: Unit | None = None
    extension: ExtensionRequest | None = None
    original: Ticket | None = None

    @property
    def due(self) -> datetime | None:
        if self.extension is not None:
            return self.extension.old_due_at
        if self.assignment is None:
            return None
        if self.ticket.status == Status.returned:
            return self.assignment.reply_due_at
        return self.assignment.close_due_at


_URGENCY_RANK = case(
    (col(Ticket.urgency) == Urgency.very_urgent, 0),
    (col(Ticket.urgency) == Urgency.urgent, 1),
    else_=2,
)


MERGE_SCAN = 200_000  # open tickets of the window read at most (a safety bound)


def _merge_ids(session: Session, now: datetime) -> list[int]:
    """The tickets not yet replied with an older open ticket from the same phone or at the
    same address, both within MERGE_WINDOW — in one pass over the window's open tickets
    (read through the created_at index): the correlated "is there an older one" per ticket
    that this replaces read the window once per ticket (bench/pages.py: 0.4 s a page at
    20,000 tickets, quadratic in the window)."""
    # One range of the (status, created_at) index per open status: the window's open
    # tickets only, never its closed ones (most of a centre's tickets).
    rows = sorted(
        (
            row
            for status in MERGE_PARENTS
            for row in session.execute(
                select(
                    col(Ticket.id),
                    col(Ticket.status),
                    col(Ticket.caller_phone),
                    col(Ticket.address),
                )
                .where(col(Ticket.status) == status, col(Ticket.created_at) >= now - MERGE_WINDOW)
                .limit(MERGE_SCAN)
            ).all()
        ),
        key=lambda row: row[0],
    )
    first_phone: dict[str, int] = {}
    first_address: dict[str, int] = {}
    found: list[int] = []
    for ticket_id, status, phone, address in rows:  # in id order: the older come first
        if status in MERGEABLE and (
            (phone and phone in first_phone) or (address and address in first_address)
        ):
            found.append(ticket_id)
        if phone:
            first_phone.setdefault(phone, ticket_id)
        if address:
            first_address.setdefault(address, ticket_id)
    return found


def _merge_clause(session: Session, now: datetime) -> ColumnElement[bool]:
    return col(Ticket.id).in_(_merge_ids(session, now) or [-1])


def count(session: Session, *, queue: Queue, now: datetime) -> int:
    if queue == Queue.extensions:
        stmt = (
            select(func.count())
            .select_from(ExtensionRequest)
            .where(col(ExtensionRequest.status) == ExtensionStatus.pending)
        )
    elif queue == Queue.merge:
        return len(_merge_ids(session, now))
    else:
        stmt = (
            select(func.count())
            .select_from(Ticket)
            .where(col(Ticket.status) == TICKET_STATUS[queue])
        )
    return int(session.scalar(stmt) or 0)


def waiting_steps(session: Session) -> int:
    """Every queue but the merge candidates, in one query."""
    tickets = (
        select(func.count())
        .select_from(Ticket)
        .where(col(Ticket.status).in_(list(TICKET_STATUS.values())))
        .scalar_subquery()
    )
    pending = (
        select(func.count())
        .select_from(ExtensionRequest)
        .where(col(ExtensionRequest.status) == ExtensionStatus.pending)
        .scalar_subquery()
    )
    return int(session.scalar(select(tickets + pending)) or 0)


def counts(session: Session, *, now: datetime) -> dict[Queue, int]:
    return {queue: count(session, queue=queue, now=now) for queue in Queue}


def items(
    session: Session, *, queue: Queue, sort: Sort, now: datetime, offset: int = 0, limit: int = 25
) -> list[Item]:
    """One page of the queue. Newest: the latest to arrive first (a ticket's last change —
    the step that put it in the queue; an extension's request). Due: the nearest deadline
    first (the lead unit's reply deadline for a return, its close deadline otherwise; an
    extension's current reply deadline); the manual queue by urgency, then the longest
    waiting."""
    if queue == Queue.extensions:
        return _extensions(session, sort=sort, offset=offset, limit=limit)
    if queue == Queue.merge:
        members: ColumnElement[bool] = _merge_clause(session, now)
    else:
        members = col(Ticket.status) == TICKET_STATUS[queue]
    if queue in (Queue.manual, Queue.merge) or sort == Sort.newest:
        # Ordered by the ticket alone: the page is chosen from the (status, created_at)
        # index first, and only its rows meet their lead assignment — a long manual queue
        # (tens of thousands) never joins its whole length (bench/pages.py).
        if sort == Sort.newest:
            newest = queue in (Queue.manual, Queue.merge)
            order: list[Any] = [
                (col(Ticket.created_at) if newest else col(Ticket.updated_at)).desc(),
                col(Ticket.id).desc(),
            ]
        else:
            order = [_URGENCY_RANK, col(Ticket.created_at), col(Ticket.id)]
        page = list(
            session.scalars(
                select(col(Ticket.id)).where(members).order_by(*order).offset(offset).limit(limit)
            )
        )
        members = col(Ticket.id).in_(page or [-1])
        rank = {ticket_id: n for n, ticket_id in enumerate(page)}
    else:
        rank = None
    lead = aliased(Assignment)
    latest = (
        select(func.max(col(Assignment.id)))
        .where(
            col(Assignment.role) == AssignmentRole.lead,
            col(Assignment.ticket_id).in_(select(col(Ticket.id)).where(members)),
        )
        .group_by(col(Assignment.ticket_id))
    )
    stmt = (
        select(Ticket, lead, Unit)
        .select_from(Ticket)
        .outerjoin(lead, and_(col(lead.ticket_id) == col(Ticket.id), col(lead.id).in_(latest)))
        .outerjoin(Unit, col(Unit.id) == col(lead.unit_id))
        .where(members)
    )
    if rank is not None:
        rows = sorted(session.execute(stmt).all(), key=lambda row: rank[row[0].id])
    else:
        due = col(lead.reply_due_at) if queue == Queue.returns else col(lead.close_due_at)
        rows = list(session.execute(stmt.order_by(due, col(Ticket.id)).offset(offset).limit(limit)))
    found = [Item(ticket=t, assignment=a, unit=u) for t, a, u in rows]
    if queue == Queue.merge:
        for item in found:
            item.original = next(iter(merge_candidates(session, ticket=item.ticket, now=now)), None)
    return found


def _extensions(session: Session, *, sort: Sort, offset: int, limit: int) -> list[Item]:
    stmt = (
        select(ExtensionRequest, Ticket, Assignment, Unit)
        .select_from(ExtensionRequest)
        .join(Ticket, col(Ticket.id) == ExtensionRequest.ticket_id)
        .join(Assignment, col(Assignment.id) == ExtensionRequest.assignment_id)
        .join(Unit, col(Unit.id) == Assignment.unit_id)
        .where(col(ExtensionRequest.status) == ExtensionStatus.pending)
    )
    order = (
        [col(ExtensionRequest.requested_at).desc(), col(ExtensionRequest.id).desc()]
        if sort == Sort.newest
        else [col(ExtensionRequest.old_due_at), col(ExtensionRequest.id)]
    )
    rows = session.execute(stmt.order_by(*order).offset(offset).limit(limit)).all()
    return [Item(ticket=t, assignment=a, unit=u, extension=e) for e, t, a, u in rows]


def next_ticket(session: Session, *, queue: Queue, now: datetime) -> int | None:
    """The ticket at the head of the queue (due first), for "next" after a step."""
    head = items(session, queue=queue, sort=Sort.due, now=now, limit=1)
    return head[0].ticket.id if head else None


def merge_candidates(session: Session, *, ticket: Ticket, now: datetime) -> list[Ticket]:
    """Open tickets from the same phone or at the same address within MERGE_WINDOW, oldest
    first (the first reported is the usual parent)."""
    same = []
    if ticket.caller_phone:
        same.append(col(Ticket.caller_phone) == ticket.caller_phone)
    if ticket.address:
        same.append(col(Ticket.address) == ticket.address)
    if not same:
        return []
    stmt = (
        select(Ticket)
        .where(
            col(Ticket.id) != ticket.id,
            col(Ticket.status).in_(MERGE_PARENTS),
            col(Ticket.created_at) >= now - MERGE_WINDOW,
            or_(*same),
        )
        .order_by(col(Ticket.created_at), col(Ticket.id))
        .limit(20)
    )
    return list(session.scalars(stmt))


# ---------------------------------------------------------------- the escalation board


@dataclass
class BoardFilters:
    level: int | None = None
    unit_id: int | None = None
    acknowledged: bool | None = None


@dataclass
class BoardRow:
    escalation: Escalation
    ticket: Ticket
    unit: Unit


def _board_where(filters: BoardFilters) -> list[ColumnElement[bool]]:
    live = select(col(Assignment.id)).where(col(Assignment.status).in_(LIVE))
    where: list[ColumnElement[bool]] = [col(Escalation.assignment_id).in_(live)]
    if filters.level is not None:
        where.append(col(Escalation.level) == filters.level)
    if filters.unit_id is not None:
        where.append(col(Escalation.unit_id) == filters.unit_id)
    if filters.acknowledged is True:
        where.append(col(Escalation.acknowledged_at).is_not(None))
    elif filters.acknowledged is False:
        where.append(col(Escalation.acknowledged_at).is_(None))
    return where


def board(
    session: Session, *, filters: BoardFilters, offset: int = 0, limit: int = 50
) -> tuple[list[BoardRow], int]:
    """Open escalations (the assignment they chase is still live), oldest first, and how
    many match."""
    where = _board_where(filters)
    total = session.scalar(select(func.count()).select_from(Escalation).where(*where)) or 0
    rows = session.execute(
        select(Escalation, Ticket, Unit)
        .select_from(Escalation)
        .join(Ticket, col(Ticket.id) == Escalation.ticket_id)
        .join(Unit, col(Unit.id) == Escalation.unit_id)
        .where(*where)
        .order_by(col(Escalation.fired_at), col(Escalation.id))
        .offset(offset)
        .limit(limit)
    ).all()
    return [BoardRow(e, t, u) for e, t, u in rows], int(total)


def board_summary(session: Session, *, filters: BoardFilters) -> list[tuple[Unit, dict[int, int]]]:
    """Open escalations per unit and level (the filters' acknowledgement state applied),
    the units with the most first."""
    where = _board_where(BoardFilters(acknowledged=filters.acknowledged))
    rows = session.execute(
        select(col(Escalation.unit_id), col(Escalation.level), func.count())
        .where(*where)
        .group_by(col(Escalation.unit_id), col(Escalation.level))
    ).all()
    per_unit: dict[int, dict[int, int]] = {}
    for unit_id, level, n in rows:
        per_unit.setdefault(unit_id, {})[level] = n
    units = {u.id: u for u in session.scalars(select(Unit).where(col(Unit.id).in_(list(per_unit))))}
    ranked = sorted(per_unit.items(), key=lambda kv: (-sum(kv[1].values()), units[kv[0]].code))
    return [(units[unit_id], levels) for unit_id, levels in ranked]


def unacknowledged(session: Session) -> int:
    where = _board_where(BoardFilters(acknowledged=False))
    return int(session.scalar(select(func.count()).select_from(Escalation).where(*where)) or 0)
