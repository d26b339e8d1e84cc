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
from operator import itemgetter

from sqlalchemy import ColumnElement, String, and_, func, or_, select, type_coerce
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from core.db import saved_id
from dispatch.assignments import LIVE
from dispatch.models import (
    Assignment,
    AssignmentRole,
    Escalation,
    ExtensionRequest,
    ExtensionStatus,
    Unit,
)
from hotline.duplicates import dismissed_with, suggested_pairs
from tickets.models import MergeDismissal, Status, Ticket, Urgency

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


URGENCY_ORDER = (Urgency.very_urgent, Urgency.urgent, Urgency.normal)  # the manual queue's
assert set(URGENCY_ORDER) == set(Urgency), "a new urgency needs its place in the queue"


MERGE_SCAN = 200_000  # open tickets of the window read at most (a safety bound)


_Open = tuple[int, str, str | None, str | None, str]  # id, status, phone, address, urgency
_MERGEABLE = frozenset(s.value for s in MERGEABLE)
_URGENCY_RANK = {u.value: n for n, u in enumerate(URGENCY_ORDER)}


def _window(session: Session, now: datetime) -> list[_Open]:
    """The open tickets of MERGE_WINDOW, oldest (lowest id) first, as plain tuples of
    strings (converting thousands of enums and rows on every page load cost more than
    reading them): one range of the (status, created_at) index per open status — never
    the window's closed tickets, most of a centre's. One query per status: PostgreSQL's
    generic plan for ``status IN (…)`` (psycopg prepares a statement run five times)
    scanned the table instead, 150 ms."""
    since = now - MERGE_WINDOW
    rows: list[_Open] = []
    for status in MERGE_PARENTS:
        rows += session.execute(
            select(
                col(Ticket.id),
                type_coerce(col(Ticket.status), String),
                col(Ticket.caller_phone),
                col(Ticket.address),
                type_coerce(col(Ticket.urgency), String),
            )
            .where(col(Ticket.status) == status, col(Ticket.created_at) >= since)
            .limit(MERGE_SCAN)
        ).all()
    rows.sort(key=itemgetter(0))  # a Row's own comparison is pure Python, and slow
    return rows


def dismissed_pairs(session: Session, ticket_ids: list[int]) -> set[tuple[int, int]]:
    """The dismissed pairs (lower id first) with a ticket from ``ticket_ids`` on the newer
    side: a dismissal always names the newer ticket as ``other_ticket_id``. Read whole when
    the ids are many (the table holds a dispatcher's decisions, not a ticket's history)."""
    if not ticket_ids:
        return set()
    stmt = select(col(MergeDismissal.ticket_id), col(MergeDismissal.other_ticket_id))
    if len(ticket_ids) <= 500:
        stmt = stmt.where(col(MergeDismissal.other_ticket_id).in_(ticket_ids))
    else:
        stmt = stmt.where(col(MergeDismissal.other_ticket_id) >= min(ticket_ids))
    return {(a, b) for a, b in session.execute(stmt).all()}


def _merge_pairs(session: Session, now: datetime) -> tuple[dict[int, int], dict[int, str]]:
    """Every merge candidate with the ticket it likely repeats (the first reported), and
    its urgency: the tickets not yet replied with an older open ticket from the same phone
    or at the same address, both within MERGE_WINDOW, the pair not dismissed — in one pass
    over the window's open tickets. The correlated "is there an older one" per ticket that
    this replaces read the window once per ticket (bench/pages.py: 0.4 s a page at 20,000
    tickets, quadratic in the window); a query per listed candidate for its original
    needed an address index. Only the first id of a phone or address is kept, except for
    the few tickets with a dismissed pair: few objects, so no garbage collection pause."""
    rows = _window(session, now)
    dismissed = dismissed_pairs(session, [row[0] for row in rows])
    # a web or Open311 request whose text alone resembles an open ticket's (hotline.duplicates)
    suggested = suggested_pairs(session, since=now - MERGE_WINDOW)
    window = {row[0] for row in rows} if suggested else set()
    watched = {b for _, b in dismissed}
    # every ticket sharing a phone or an address with a ticket of a dismissed pair
    groups: dict[str, list[int]] = {}
    for ticket_id, _, phone, address, _ in rows:
        if ticket_id in watched:
            for key in (f"p{phone}" if phone else "", f"a{address}" if address else ""):
                if key:
                    groups.setdefault(key, [])
    first_phone: dict[str, int] = {}
    first_address: dict[str, int] = {}
    found: dict[int, int] = {}
    urgency: dict[int, str] = {}
    for ticket_id, status, phone, address, urgent in rows:  # in id order: older first
        if status in _MERGEABLE:
            if ticket_id in watched:  # a dismissed pair is never offered
                older = [
                    other
                    for key in (f"p{phone}" if phone else "", f"a{address}" if address else "")
                    if key
                    for other in groups[key]
                    if (other, ticket_id) not in dismissed
                ]
                original = min(older, default=None)
            else:
                original = min(
                    first_phone.get(phone or "", ticket_id),
                    first_address.get(address or "", ticket_id),
                )
            if (original is None or original == ticket_id) and ticket_id in suggested:
                original = next(
                    (
                        other
                        for other in suggested[ticket_id]
                        if other in window and (other, ticket_id) not in dismissed
                    ),
                    None,
                )
            if original is not None and original != ticket_id:
                found[ticket_id] = original
                urgency[ticket_id] = urgent
        if phone:
            first_phone.setdefault(phone, ticket_id)
            if groups and f"p{phone}" in groups:
                groups[f"p{phone}"].append(ticket_id)
        if address:
            first_address.setdefault(address, ticket_id)
            if groups and f"a{address}" in groups:
                groups[f"a{address}"].append(ticket_id)
    return found, urgency


def count(session: Session, *, queue: Queue, now: datetime) -> int:
    if queue == Queue.extensions:
        stmt = (
            select(func.count())
            .select_from(ExtensionRequest)
            .where(col(ExtensionRequest.status) == ExtensionStatus.pending)
        )
    elif queue == Queue.merge:
        return len(_merge_pairs(session, now)[0])
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


def _manual_due(session: Session, *, offset: int, limit: int) -> list[int]:
    """A page of the manual queue due first: the most urgent first, then the longest
    waiting. One range of the (status, urgency, created_at, id) index per urgency, in
    URGENCY_ORDER, read from the page's start — counting (index only) the urgencies the page
    lies beyond; ordering by a CASE of the urgency instead sorted the whole queue on every
    page (bench/pages.py: 0.6 s on PostgreSQL with 25,000 tickets waiting)."""
    page: list[int] = []
    for urgency in URGENCY_ORDER:
        where = (
            col(Ticket.status) == Status.pending_dispatch,
            col(Ticket.urgency) == urgency,
        )
        if offset:
            n = int(session.scalar(select(func.count()).select_from(Ticket).where(*where)) or 0)
            if n <= offset:
                offset -= n
                continue
        page += session.scalars(
            select(col(Ticket.id))
            .where(*where)
            .order_by(col(Ticket.created_at), col(Ticket.id))
            .offset(offset)
            .limit(limit - len(page))
        )
        offset = 0
        if len(page) >= limit:
            break
    return page


def _merge_page(
    session: Session, *, sort: Sort, now: datetime, offset: int, limit: int
) -> tuple[list[int], dict[int, int]]:
    """A page of the merge candidates and each one's original, ordered from the scan (a
    ticket's id is its place in the order of arrival)."""
    found, urgency = _merge_pairs(session, now)
    if sort == Sort.newest:
        ordered = sorted(found, reverse=True)
    else:
        ordered = sorted(
            found, key=lambda ticket_id: (_URGENCY_RANK[urgency[ticket_id]], ticket_id)
        )
    page = ordered[offset : offset + limit]
    return page, {ticket_id: found[ticket_id] for ticket_id in page}


def items(
    session: Session, *, queue: Queue, sort: Sort, now: datetime, offset: int = 0, limit: int = 25
) -> list[Item]:
    """One page of the queue. Newest: the latest to arrive first (a ticket's last change —
    the step that put it in the queue; an extension's request). Due: the nearest deadline
    first (the lead unit's reply deadline for a return, its close deadline otherwise; an
    extension's current reply deadline); the manual queue and the merge candidates by
    urgency, then the longest waiting."""
    if queue == Queue.extensions:
        return _extensions(session, sort=sort, offset=offset, limit=limit)
    originals: dict[int, int] = {}
    rank: dict[int, int] | None = None
    members: ColumnElement[bool]
    if queue in (Queue.merge, Queue.manual) or sort == Sort.newest:
        # Ordered by the ticket alone: the page is chosen first (from an index, or the
        # merge scan), and only its rows meet their lead assignment — a long manual queue
        # (tens of thousands) never joins its whole length (bench/pages.py).
        if queue == Queue.merge:
            page, originals = _merge_page(session, sort=sort, now=now, offset=offset, limit=limit)
        elif queue == Queue.manual and sort == Sort.due:
            page = _manual_due(session, offset=offset, limit=limit)
        else:
            stamp = col(Ticket.created_at) if queue == Queue.manual else col(Ticket.updated_at)
            page = list(
                session.scalars(
                    select(col(Ticket.id))
                    .where(col(Ticket.status) == TICKET_STATUS[queue])
                    .order_by(stamp.desc(), col(Ticket.id).desc())
                    .offset(offset)
                    .limit(limit)
                )
            )
        members = col(Ticket.id).in_(page or [-1])
        rank = {ticket_id: n for n, ticket_id in enumerate(page)}
    else:
        members = col(Ticket.status) == TICKET_STATUS[queue]
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
    if originals:
        parents = {
            t.id: t
            for t in session.scalars(
                select(Ticket).where(col(Ticket.id).in_(set(originals.values())))
            )
        }
        for item in found:
            item.original = parents.get(originals.get(item.ticket.id or 0, 0))
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
    first (the first reported is the usual parent), but none a dispatcher said is another
    request."""
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
    dismissed = dismissed_with(session, saved_id(ticket))
    if dismissed:
        stmt = stmt.where(col(Ticket.id).not_in(dismissed))
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
