"""The escalation board (督办): every open escalation step — the assignment it chases is
still live — oldest first, per unit and level, with its acknowledgement; filterable by
level, unit and acknowledgement. Supervisors (and admins) acknowledge from here."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from starlette.responses import Response

from core.errors import DomainError
from dispatch import escalation_visibility
from dispatch.models import Clock, EscalationKind
from tickets import service as tickets
from web.api.schemas import ticket_read
from web.auth import DISPATCH, SUPERVISION
from web.deps import ClockDep, PathId, SessionDep
from web.pages import nav, queues_data
from web.pages.i18n import N_
from web.pages.nav import NavItem
from web.pages.people import Person, csrf_form, record, safe_next
from web.pages.queues_common import Dispatching, after, hx_block, not_found, notice, refuse, show
from web.pages.queues_dispatch import units_for_picker

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
KIND_NAMES = {
    EscalationKind.warning: N_("Warning"),
    EscalationKind.chase: N_("Chase"),
    EscalationKind.supervision: N_("Supervision"),
    EscalationKind.leadership: N_("Leadership notice"),
}
CLOCK_NAMES = {Clock.sign: N_("sign-for"), Clock.reply: N_("reply"), Clock.close: N_("close")}
LEVELS = (1, 2, 3, 4)

nav.register(
    NavItem(
        "/escalations",
        N_("Escalations"),
        DISPATCH,
        order=35,
        count=lambda session, person, now: queues_data.unacknowledged(session),
    )
)


def _here(**params: object) -> str:
    """The board as filtered now (without the last notice), to come back to after a step."""
    kept = {k: v for k, v in params.items() if v and v != 1}
    return "/escalations" + (f"?{urlencode(kept)}" if kept else "")


def _acknowledged(value: str) -> bool | None:
    return {"yes": True, "no": False}.get(value)


@router.get("/escalations")
def escalation_board(
    request: Request,
    session: SessionDep,
    person: Person = Dispatching,
    level: Annotated[str, Query(max_length=2)] = "",
    unit: Annotated[str, Query(max_length=32)] = "",
    acknowledged: Annotated[str, Query(max_length=3)] = "",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    done: Annotated[str | None, Query(max_length=32)] = None,
    n: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    units = units_for_picker(session)
    chosen_unit = next((u for u in units if u.code == unit), None)
    filters = queues_data.BoardFilters(
        level=int(level) if level.isdigit() else None,
        unit_id=chosen_unit.id if chosen_unit else None,
        acknowledged=_acknowledged(acknowledged),
    )
    rows, total = queues_data.board(
        session, filters=filters, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    context = {
        "rows": [(r, ticket_read(r.ticket, person.user)) for r in rows],
        "total": total,
        "page": page,
        "more": page * PAGE_SIZE < total,
        "summary": queues_data.board_summary(session, filters=filters),
        "levels": LEVELS,
        "units": units,
        "level": level if level.isdigit() else "",
        "unit": chosen_unit.code if chosen_unit else "",
        "acknowledged": acknowledged if acknowledged in ("yes", "no") else "",
        "kind_names": KIND_NAMES,
        "clock_names": CLOCK_NAMES,
        "may_acknowledge": person.role in SUPERVISION,
        "notice": notice(done, n),
        "here": _here(level=level, unit=unit, acknowledged=acknowledged, page=page),
    }
    return show(request, "escalations/board.html", context, block=hx_block(request, "board"))


@router.post("/escalations/{escalation_id}/ack", dependencies=[Depends(csrf_form)])
def acknowledge(
    request: Request,
    escalation_id: PathId,
    session: SessionDep,
    clock: ClockDep,
    back: Annotated[str, Form(max_length=500)] = "/escalations",
    person: Person = Dispatching,
) -> Response:
    target = f"escalation:{escalation_id}"
    try:
        step = escalation_visibility.acknowledge(
            session, escalation_id=escalation_id, user=person.user, now=clock.now()
        )
    except DomainError as exc:
        # The service answers "missing" for a step this person may not acknowledge.
        refuse(
            session, request, clock, person=person, action="escalation.ack", target=target, exc=exc
        )
        return not_found(request)
    record(session, request, clock, action="escalation.ack", person=person, target=target)
    ticket = tickets.get_ticket(session, step.ticket_id)
    back = safe_next(back)
    return after(
        back if back.startswith("/escalations") else "/escalations", "acknowledged", ticket
    )
