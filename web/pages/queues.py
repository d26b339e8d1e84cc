"""The dispatcher's and supervisor's workspace (派单 / 督办): the queues of waiting work —
manual dispatch, returns, extension requests, replies to review, callbacks due, merge
candidates — with their counts in the top bar, each newest-first or due-first a page at a
time; the dispatch form (``queues_dispatch``), the review pages of each queue's items
(``queues_review``) and the escalation board (``queues_escalations``).

After each step the page goes back (303) to its queue with a notice, the next item's link
focused, so a dispatcher works a queue from the keyboard."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlmodel import Session
from starlette.responses import Response

from web.api.schemas import ticket_read
from web.auth import DISPATCH
from web.deps import ClockDep, SessionDep
from web.pages import nav, queues_data, queues_dispatch, queues_escalations, queues_review
from web.pages.i18n import N_
from web.pages.labels import STATUS_NAMES
from web.pages.nav import NavItem
from web.pages.people import Person
from web.pages.queues_common import QUEUE_HINTS, QUEUE_NAMES, Dispatching, hx_block, notice, show
from web.pages.queues_data import Queue, Sort

router = APIRouter(include_in_schema=False)
router.include_router(queues_dispatch.router)
router.include_router(queues_review.router)
router.include_router(queues_escalations.router)

PAGE_SIZE = 25


def _waiting(session: Session, person: Person, now: datetime) -> int:
    """The steps waiting in the queues. Merge candidates are suggestions, not steps owed
    (and counting them reads the two weeks' open tickets, on every page's top bar)."""
    return queues_data.waiting_steps(session)


nav.register(NavItem("/queues", N_("Queues"), DISPATCH, order=30, count=_waiting))

ITEM_PATHS = {
    Queue.manual: "/dispatch/{ticket}",
    Queue.returns: "/queues/returns/{ticket}",
    Queue.extensions: "/queues/extensions/{extension}",
    Queue.replies: "/queues/replies/{ticket}",
    Queue.callbacks: "/queues/callbacks/{ticket}",
    Queue.merge: "/queues/merge/{ticket}",
}
ACTIONS = {
    Queue.manual: N_("Dispatch"),
    Queue.returns: N_("Review"),
    Queue.extensions: N_("Decide"),
    Queue.replies: N_("Review"),
    Queue.callbacks: N_("Call back"),
    Queue.merge: N_("Compare"),
}


# The tabs whose count a queue's page loads after itself (``GET /queues/counts/{queue}``,
# as the top bar's counts are): the merge candidates' count reads the two weeks' open
# tickets (15 ms at 1,000,000 tickets, half the manual queue's page), and a dispatcher
# working the manual queue need not wait for it. The overview and the merge queue's own
# page count it in place.
LATER = frozenset({Queue.merge})


def _common(
    session: Session, clock: ClockDep, *, later: frozenset[Queue] = frozenset()
) -> dict[str, object]:
    now = clock.now()
    return {
        "queues": list(Queue),
        "queue_names": QUEUE_NAMES,
        "queue_hints": QUEUE_HINTS,
        "counts": {
            queue: queues_data.count(session, queue=queue, now=now)
            for queue in Queue
            if queue not in later
        },
        "status_names": STATUS_NAMES,
    }


@router.get("/queues")
def overview(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    person: Person = Dispatching,
) -> Response:
    """Every queue with its count and its three items due first."""
    now = clock.now()
    heads = {
        queue: [
            (item, ticket_read(item.ticket, person.user))
            for item in queues_data.items(session, queue=queue, sort=Sort.due, now=now, limit=3)
        ]
        for queue in Queue
    }
    context = {**_common(session, clock), "heads": heads, "item_paths": ITEM_PATHS}
    return show(request, "queues/overview.html", context)


@router.get("/queues/counts/{queue}")
def queue_count(
    request: Request,
    queue: Queue,
    session: SessionDep,
    clock: ClockDep,
    person: Person = Dispatching,
) -> Response:
    """One tab's count, for a tab its page loads after itself (LATER): exact, never cached."""
    n = queues_data.count(session, queue=queue, now=clock.now())
    return show(request, "queues/_count.html", {"queue": queue, "n": n})


@router.get("/queues/{queue}")
def queue_page(
    request: Request,
    queue: Queue,
    session: SessionDep,
    clock: ClockDep,
    person: Person = Dispatching,
    sort: Annotated[Sort, Query()] = Sort.due,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    done: Annotated[str | None, Query(max_length=32)] = None,
    n: Annotated[str | None, Query(max_length=32)] = None,
    due: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    found = queues_data.items(
        session,
        queue=queue,
        sort=sort,
        now=clock.now(),
        offset=(page - 1) * PAGE_SIZE,
        limit=PAGE_SIZE + 1,
    )
    context = {
        **_common(session, clock, later=LATER - {queue}),
        "queue": queue,
        "sort": sort.value,
        "page": page,
        "more": len(found) > PAGE_SIZE,
        "rows": [(item, ticket_read(item.ticket, person.user)) for item in found[:PAGE_SIZE]],
        "item_path": ITEM_PATHS[queue],
        "action": ACTIONS[queue],
        "notice": notice(done, n, due),
    }
    return show(request, "queues/list.html", context, block=hx_block(request, "rows"))
