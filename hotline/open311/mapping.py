"""A ticket as the GeoReport v2 request a citizen or a partner may see. What is left out is
left out here, in one place: the caller's name and phone are never fields, and are masked
where the free text carries them (accounts.privacy.mask_text); a confidential ticket is
never mapped (hotline.open311.requests filters it in the query)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from accounts.privacy import mask_text
from tickets.models import Status

OPEN = "open"
CLOSED = "closed"

# Open311 knows two states. A ticket is closed once the centre is done with it: 办结,
# 归档, or 并单 into another ticket that carries the work on.
CLOSED_STATUSES = frozenset({Status.closed, Status.archived, Status.merged})
OPEN_STATUSES = frozenset(Status) - CLOSED_STATUSES

# The unit's reply reaches the citizen once the centre has approved it (审核通过); before
# that it may still be sent back.
_REPLY_PUBLIC = frozenset({Status.reviewed, Status.closed, Status.archived, Status.reopened})


def open_or_closed(status: Status) -> str:
    return CLOSED if status in CLOSED_STATUSES else OPEN


def statuses_for(states: set[str]) -> frozenset[Status]:
    chosen: set[Status] = set()
    if OPEN in states:
        chosen |= OPEN_STATUSES
    if CLOSED in states:
        chosen |= CLOSED_STATUSES
    return frozenset(chosen)


SHOWN_COLUMNS = (
    "number",
    "status",
    "caller_name",
    "description",
    "address",
    "latitude",
    "longitude",
    "category_code",
    "category_name",
    "reply",
    "answer",
    "created_at",
    "updated_at",
)


class Shown(Protocol):
    """What a request is made from: a Ticket, or a row of its SHOWN_COLUMNS."""

    @property
    def number(self) -> str: ...
    @property
    def status(self) -> Status: ...
    @property
    def caller_name(self) -> str | None: ...
    @property
    def description(self) -> str: ...
    @property
    def address(self) -> str | None: ...
    @property
    def latitude(self) -> float | None: ...
    @property
    def longitude(self) -> float | None: ...
    @property
    def category_code(self) -> str | None: ...
    @property
    def category_name(self) -> str | None: ...
    @property
    def reply(self) -> str | None: ...
    @property
    def answer(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...


@dataclass(frozen=True)
class Lead:
    """The lead unit (主办单位) of a ticket's current or last dispatch."""

    unit_name: str
    close_due_at: datetime | None


def iso(moment: datetime | None, tz: ZoneInfo) -> str | None:
    return moment.astimezone(tz).isoformat(timespec="seconds") if moment else None


def _names(ticket: Shown) -> list[str]:
    name = ticket.caller_name or ""
    return [name, name.replace(" ", "")]


def status_notes(ticket: Shown, *, merged_into: str | None = None) -> str | None:
    """The request's public note. A request merged (并单) into another is closed here, as
    Open311 servers close a duplicate: the note names the request that carries the work
    on (unless that one is confidential), whose progress a client follows; when that one
    is done, the same reply reaches this request (its status stays closed, the note
    becomes the reply)."""
    if ticket.status == Status.merged:
        if merged_into:
            return f"与相同诉求的工单 {merged_into} 合并办理，办理进度请查询该工单"
        return "与相同诉求的工单合并办理"
    if ticket.status in _REPLY_PUBLIC and ticket.reply:
        return mask_text(ticket.reply, names=_names(ticket))
    if ticket.status in CLOSED_STATUSES and ticket.answer:
        # answered at intake (直接办结)
        return mask_text(ticket.answer, names=_names(ticket))
    return None


def public_request(
    ticket: Shown,
    *,
    lead: Lead | None,
    service_name: str | None,
    tz: ZoneInfo,
    merged_into: str | None = None,
) -> dict[str, Any]:
    """The spec's request element, its fields in the spec's order. No contact detail of
    the sender (name, phone, e-mail, device, account) is a field, and `media_url` stays
    empty: the sender's media is a link for the centre's staff, not republished unseen."""
    return {
        "service_request_id": ticket.number,
        "status": open_or_closed(ticket.status),
        "status_notes": status_notes(ticket, merged_into=merged_into),
        "service_name": service_name or ticket.category_name,
        "service_code": ticket.category_code,
        "description": mask_text(ticket.description, names=_names(ticket)),
        "agency_responsible": lead.unit_name if lead else None,
        "service_notice": None,
        "requested_datetime": iso(ticket.created_at, tz),
        "updated_datetime": iso(ticket.updated_at, tz),
        "expected_datetime": iso(lead.close_due_at, tz)
        if lead and ticket.status in OPEN_STATUSES
        else None,
        "address": mask_text(ticket.address, names=_names(ticket)) if ticket.address else None,
        "address_id": None,
        "zipcode": None,
        "lat": ticket.latitude,
        "long": ticket.longitude,
        "media_url": None,
    }
