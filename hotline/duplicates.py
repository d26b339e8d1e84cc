"""Duplicate suggestions at intake (重复件): the open tickets of the last days that are likely
the same matter as a new one — the same caller, the same address, or a similar text — with
the reasons, for the operator to merge with one click (``dispatch.closing.merge``).

A request that arrives with no operator — the public site, Open311 — is compared at intake
(``suggest_at_intake``): its likely duplicates are recorded on it as a note, so the
dispatcher's merge candidates list it even when only its text resembles an open ticket's,
and the merge page (``review_candidates``) shows each candidate with its reasons and score.

Similarity is the overlap of the two texts' character pairs (Jaccard over bigrams of the
Chinese text without punctuation): robust to word order and to the operators' and the ASR's
differing wording, cheap on a few hundred recent tickets. It suggests; a person decides —
and when a dispatcher says two tickets are not the same request (``dismiss``), the pair is
never suggested again, here or in the merge-candidates queue."""

from __future__ import annotations

import logging
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import func, or_, select, union_all
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from core.db import after_commit, saved_id
from core.errors import Conflict, InvalidInput
from dispatch.assignments import Actor, lock_ticket, who
from tickets import service as tickets
from tickets.lifecycle import Action
from tickets.models import MergeDismissal, Status, Ticket, TicketEvent

WINDOW = timedelta(days=7)
SIMILAR = 0.35  # bigram Jaccard from which two texts are "similar"
SCAN = 300  # the newest recent tickets (and of the same category) compared by text
TEXT = 500  # the characters of a text compared (a long transcript's start says what it is)
# the same in a web or Open311 request (suggest_at_intake)
INTAKE_SCAN, INTAKE_KEY_SCAN, INTAKE_TEXT = 100, 20, 200
log = logging.getLogger(__name__)

SUGGESTED = "duplicate_suggested"  # the note's kind
RULE = "hotline.duplicates"  # the note's rule: the queue finds the notes by an indexed column
OPEN = (
    Status.intake,
    Status.pending_dispatch,
    Status.dispatched,
    Status.signed,
    Status.in_progress,
    Status.replied,
    Status.reviewed,
    Status.returned,
    Status.reopened,
)
_NOT_TEXT = re.compile(r"[\s\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Candidate:
    ticket: Ticket
    same_caller: bool
    same_address: bool
    similarity: float  # 0..1

    @property
    def score(self) -> float:
        return self.similarity + 0.5 * self.same_caller + 0.4 * self.same_address


def bigrams(text: str) -> set[str]:
    plain = _NOT_TEXT.sub("", text or "").lower()
    return set(map(operator.add, plain, plain[1:]))


def similarity(a: str, b: str) -> float:
    x, y = bigrams(a), bigrams(b)
    if not x or not y:
        return 0.0
    return len(x & y) / len(x | y)


def _jaccard(x: set[str], y: set[str]) -> float:
    return len(x & y) / len(x | y) if x and y else 0.0


@dataclass(frozen=True)
class Match:
    """A candidate as the scan finds it: its id and number, the reasons, the similarity."""

    id: int
    number: str
    same_caller: bool
    same_address: bool
    similarity: float

    @property
    def score(self) -> float:
        return self.similarity + 0.5 * self.same_caller + 0.4 * self.same_address


def matches(
    session: Session,
    *,
    ticket: Ticket,
    now: datetime,
    dismissed: set[int],
    limit: int = 8,
    window: timedelta = WINDOW,
    scan: int = SCAN,
    key_scan: int = SCAN,
    text: int = TEXT,
    newest_of_all: bool = True,
) -> list[Match]:
    """The open tickets of the last ``window`` but ``ticket`` and the ``dismissed`` that
    share its caller or address or resemble its text — compared with the newest tickets
    and the newest of its category — best first. One statement (a UNION ALL of the scans,
    each on its own index) reads five columns and the first ``text`` characters of each
    text: reading a few hundred whole tickets to compare them cost ten times the rest of
    a web or Open311 intake. Without ``newest_of_all`` the text is compared with its
    category's tickets only (and those sharing its phone or address)."""
    base = select(
        col(Ticket.id),
        col(Ticket.number),
        col(Ticket.caller_phone),
        col(Ticket.address),
        func.substr(col(Ticket.description), 1, text).label("text"),
    ).where(
        col(Ticket.id) != ticket.id,
        col(Ticket.created_at) >= now - window,
        col(Ticket.status).in_(OPEN),
    )
    if dismissed:
        base = base.where(col(Ticket.id).not_in(dismissed))
    newest = base.order_by(col(Ticket.created_at).desc())
    scans = [newest.limit(scan)] if newest_of_all or not ticket.category_code else []
    if ticket.caller_phone:
        scans.append(base.where(col(Ticket.caller_phone) == ticket.caller_phone).limit(key_scan))
    if ticket.address:
        scans.append(base.where(col(Ticket.address) == ticket.address).limit(key_scan))
    if ticket.category_code:
        # a busy centre's newest few hundred are minutes of intake; its category's, days
        scans.append(newest.where(col(Ticket.category_code) == ticket.category_code).limit(scan))
    # each scan a subquery: SQLite takes no ORDER BY or LIMIT in a bare UNION member
    both = union_all(*(select(one.subquery()) for one in scans))
    mine = bigrams(ticket.description[:text])
    texts: dict[str, float] = {}  # the same words, compared once
    found: dict[int, Match] = {}
    seen: set[int] = set()
    for other_id, number, phone, address, words in session.execute(both):
        if other_id in seen:
            continue
        seen.add(other_id)
        words = words or ""
        alike = texts.get(words)
        if alike is None:
            alike = texts[words] = round(_jaccard(mine, bigrams(words)), 2)
        match = Match(
            id=other_id,
            number=number,
            same_caller=bool(ticket.caller_phone) and phone == ticket.caller_phone,
            same_address=bool(ticket.address) and address == ticket.address,
            similarity=alike,
        )
        if match.same_caller or match.same_address or alike >= SIMILAR:
            found[other_id] = match
    return sorted(found.values(), key=lambda m: (-m.score, -m.id))[:limit]


def candidates(
    session: Session,
    *,
    ticket: Ticket,
    now: datetime,
    limit: int = 8,
    window: timedelta = WINDOW,
) -> list[Candidate]:
    """``matches`` with their tickets, none a dispatcher dismissed as another request."""
    dismissed = dismissed_with(session, saved_id(ticket)) if ticket.id is not None else set()
    found = matches(
        session, ticket=ticket, now=now, dismissed=dismissed, limit=limit, window=window
    )
    rows = {
        saved_id(t): t
        for t in session.scalars(select(Ticket).where(col(Ticket.id).in_([m.id for m in found])))
    }
    return [
        Candidate(rows[m.id], m.same_caller, m.same_address, m.similarity)
        for m in found
        if m.id in rows
    ]


def compare(ticket: Ticket, other: Ticket) -> Candidate:
    """``other`` as a candidate for ``ticket``: what they share, how alike their texts are."""
    return Candidate(
        ticket=other,
        same_caller=bool(ticket.caller_phone) and other.caller_phone == ticket.caller_phone,
        same_address=bool(ticket.address) and other.address == ticket.address,
        similarity=round(similarity(ticket.description[:TEXT], other.description[:TEXT]), 2),
    )


def _best(found: Iterable[Candidate]) -> list[Candidate]:
    return sorted(found, key=lambda c: (-c.score, -(c.ticket.id or 0)))


# ---------------------------------------------------------------- requests with no operator


def suggest_at_intake(session: Session, *, ticket: Ticket, now: datetime) -> list[Match]:
    """A request no operator took (the public site, Open311) compared with the open tickets
    as the console compares a call: its likely duplicates, if any, are recorded on it — a
    note with each one's reasons and score — so that the dispatcher sees them in the merge
    candidates (``suggested_pairs``) and on its merge page (``review_candidates``). A new
    ticket has no dismissed pair yet, and the note needs no more than the scan read. The
    comparison is the part of a web or Open311 intake that costs (bigrams of every text
    compared, ~40 µs for 300 characters), so it is narrower than the console's: the
    newest 100 of its category (they reach back days), 20 of its phone's and of its
    address's (a street with more open tickets is a hot spot, not one matter), the first
    200 characters; the merge page compares again in full."""
    found = matches(
        session,
        ticket=ticket,
        now=now,
        dismissed=set(),
        scan=INTAKE_SCAN,
        key_scan=INTAKE_KEY_SCAN,
        text=INTAKE_TEXT,
        newest_of_all=False,
    )
    if found:
        tickets.add_note(
            session,
            ticket=ticket,
            actor="system",
            now=now,
            kind=SUGGESTED,
            rule=RULE,
            data={
                "candidates": [
                    {
                        "id": m.id,
                        "number": m.number,
                        "same_caller": m.same_caller,
                        "same_address": m.same_address,
                        "similarity": m.similarity,
                        "score": round(m.score, 2),
                    }
                    for m in found
                ]
            },
        )
    return found


def _suggested_rows(session: Session, *where: Any) -> list[tuple[int, dict[str, Any]]]:
    rows = session.execute(
        select(col(TicketEvent.ticket_id), col(TicketEvent.data)).where(
            col(TicketEvent.action) == Action.note, col(TicketEvent.rule) == RULE, *where
        )
    ).all()
    return [(ticket_id, data) for ticket_id, data in rows if data.get("kind") == SUGGESTED]


def _ids(data: dict[str, Any]) -> list[int]:
    return [int(c["id"]) for c in data.get("candidates", []) if isinstance(c.get("id"), int)]


def suggested_pairs(session: Session, *, since: datetime) -> dict[int, list[int]]:
    """The tickets suggested at intake since ``since``, each with its candidates' ids, best
    first (``ix_ticket_event_action_at``: the notes of the window only)."""
    found: dict[int, list[int]] = {}
    for ticket_id, data in _suggested_rows(session, col(TicketEvent.at) >= since):
        found.setdefault(ticket_id, []).extend(_ids(data))
    return found


def review_candidates(
    session: Session, *, ticket: Ticket, now: datetime, window: timedelta = WINDOW
) -> list[Candidate]:
    """What the dispatcher compares on the merge page: the open tickets that share the
    ticket's caller or address or resemble its text now, and those suggested at its intake
    that are still open, in the window and not dismissed — each with its reasons, best
    first."""
    found = {
        saved_id(c.ticket): c
        for c in candidates(session, ticket=ticket, now=now, window=window, limit=20)
    }
    recorded = {
        other
        for _, data in _suggested_rows(session, col(TicketEvent.ticket_id) == saved_id(ticket))
        for other in _ids(data)
    }
    recorded -= set(found) | dismissed_with(session, saved_id(ticket))
    if recorded:
        for other in session.scalars(
            select(Ticket).where(
                col(Ticket.id).in_(recorded),
                col(Ticket.status).in_(OPEN),
                col(Ticket.created_at) >= now - window,
            )
        ):
            found[saved_id(other)] = compare(ticket, other)
    return _best(found.values())


def caller_history(session: Session, *, phone: str, limit: int = 10) -> list[Ticket]:
    """The caller's earlier tickets: open ones first, then the newest."""
    if not phone:
        return []
    rows = list(
        session.scalars(
            select(Ticket)
            .where(col(Ticket.caller_phone) == phone)
            .order_by(col(Ticket.created_at).desc())
            .limit(100)
        )
    )
    rows.sort(key=lambda t: (t.status not in OPEN,))  # stable: newest first within each
    return rows[:limit]


# ---------------------------------------------------------------- 不是重复件 dismissal


def dismissed_with(session: Session, ticket_id: int) -> set[int]:
    """The tickets a dispatcher said are not the same request as ``ticket_id``."""
    rows = session.execute(
        select(col(MergeDismissal.ticket_id), col(MergeDismissal.other_ticket_id)).where(
            or_(
                col(MergeDismissal.ticket_id) == ticket_id,
                col(MergeDismissal.other_ticket_id) == ticket_id,
            )
        )
    ).all()
    return {b if a == ticket_id else a for a, b in rows}


def dismiss(
    session: Session,
    *,
    ticket_id: int,
    other_id: int,
    actor: Actor,
    now: datetime,
    reason: str | None = None,
) -> MergeDismissal:
    """不是重复件: ``ticket_id`` and ``other_id`` are two requests, not one reported twice.
    The pair is stored once (lower id first), so it is found from either side, and both
    tickets' histories say who decided and why. Saying it twice is refused (Conflict): the
    second dispatcher's page was out of date, and nothing changes."""
    if ticket_id == other_id:
        raise InvalidInput("a ticket is always the same request as itself")
    low, high = sorted((ticket_id, other_id))
    # locked in id order: the same pair dismissed from either side at once waits, never
    # deadlocks, and the second finds the first's row
    first, second = lock_ticket(session, low), lock_ticket(session, high)
    if high in dismissed_with(session, low):
        raise Conflict(f"tickets {first.number} and {second.number} are already dismissed")
    reason = (reason or "").strip() or None
    row = MergeDismissal(
        ticket_id=low,
        other_ticket_id=high,
        by_user_id=actor.id if actor is not None else None,
        at=now,
        reason=reason,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent dismissal of the same pair won
        raise Conflict(f"tickets {first.number} and {second.number} are already dismissed") from exc
    for ticket, other in ((first, second), (second, first)):
        tickets.add_note(
            session,
            ticket=ticket,
            actor=who(actor),
            now=now,
            kind="merge_dismissed",
            reason=reason,
            data={"other": other.number, "other_id": saved_id(other)},
        )
    return row


# ---------------------------------------------------------------- inline or by a worker

# What defers the comparison of a request no operator took: given the new ticket's id once
# its intake has committed (production: a Celery task, `send_suggest_task`).
Defer = Callable[[int], object]
_SETTLED = frozenset({Status.merged, Status.closed, Status.archived})


def suggest_after_intake(
    session: Session, *, ticket: Ticket, now: datetime, defer: Defer | None
) -> None:
    """`suggest_at_intake` now, in the intake's own transaction — or, with `defer`
        (hotline.duplicates_queue), by a worker once the intake has committed: the comparison
        is most of what a web or Open311 intake costs, and the dispatcher it is for looks
        minutes later, so a web process serving citizens and partner systems (production:
        several, workers beside them) need not carry
    it. The embedded platform compares inline: one machine, the same CPU either way."""
    if defer is None:
        suggest_at_intake(session, ticket=ticket, now=now)
    else:
        after_commit(session, partial(defer, saved_id(ticket)))


def suggest_later(session: Session, *, ticket_id: int, now: datetime) -> int:
    """The deferred comparison (the worker's task): how many likely duplicates were recorded.
    Nothing for a ticket gone or settled meanwhile, or compared already (a task delivered
    twice records once)."""
    ticket = session.get(Ticket, ticket_id)
    if ticket is None or ticket.status in _SETTLED:
        return 0
    done = session.scalar(
        select(func.count())
        .select_from(TicketEvent)
        .where(
            col(TicketEvent.ticket_id) == ticket_id,
            col(TicketEvent.action) == Action.note.value,
            col(TicketEvent.rule) == RULE,
        )
    )
    if done:
        return 0
    return len(suggest_at_intake(session, ticket=ticket, now=now))
