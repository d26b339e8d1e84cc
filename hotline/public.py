"""The public site's logic (web.pages.public): a citizen's request entering the same intake
as a call, the short lookup code that lets its sender follow it, the public timeline and
rating of one request (a request merged into another follows the other's progress), and the
public list and GeoJSON of recent requests. The limits that keep the site from being flooded
are hotline.public_limits.

What the public sees is chosen here, not in the templates: no name, phone, description,
address text or reply of another person's request ever leaves this module for the list or
the GeoJSON, and a confidential (or anonymous, which is stored as confidential) request is
not in them at all."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlmodel import Session, col

from accounts.privacy import mask_text
from core.db import saved_id
from core.errors import Conflict, NotFound
from dispatch import closing, reference
from dispatch.assignments import assignments_of
from dispatch.models import AssignmentRole
from hotline import attachments, duplicates, intake
from tickets import service as tickets
from tickets.models import Channel, Satisfaction, Status, Ticket, TicketCreate

# ---------------------------------------------------------------- categories

# The public form's short list, taken from the centre's catalogue (dispatch/data/rules-zh.yaml:
# each pair is a rule's category_code and category_name there, checked by a test). The rules
# still classify the request from its words; the citizen's choice is the starting point and
# the title the rules read with the description.
CATEGORIES: dict[str, str] = {
    "010101": "物业服务",
    "020301": "环境卫生",
    "020401": "路灯",
    "020402": "井盖",
    "020403": "道路破损",
    "020201": "违法建设",
    "020101": "占道经营",
    "020602": "社会生活噪声",
    "030202": "餐饮油烟",
    "040301": "道路交通秩序",
    "060202": "消费维权",
    "090104": "供水服务",
    "090203": "供电服务",
}
OTHER = "other"


# ---------------------------------------------------------------- lookup codes

# No 0/O, 1/I/L: a code read out over the phone or copied from a screen is not misread.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 6
_CODE_CONTEXT = b"hotline.public.lookup-code:"


def lookup_code(secret: str, number: str) -> str:
    """The request's lookup code: an HMAC of its number under the server's secret, so it
    needs no column and nobody without the secret can make one for another number."""
    digest = hmac.new(secret.encode(), _CODE_CONTEXT + number.encode(), hashlib.sha256).digest()
    value = int.from_bytes(digest, "big")
    chars = []
    for _ in range(CODE_LENGTH):
        value, index = divmod(value, len(ALPHABET))
        chars.append(ALPHABET[index])
    return "".join(chars)


def normalise_code(code: str) -> str:
    return re.sub(r"[\s-]", "", code).upper()


def code_matches(secret: str, number: str, code: str) -> bool:
    return hmac.compare_digest(
        lookup_code(secret, number).encode(), normalise_code(code).encode("utf-8", "replace")
    )


def phone_matches(ticket: Ticket, last4: str) -> bool:
    digits = re.sub(r"\D", "", ticket.caller_phone or "")
    if len(digits) < 4 or not re.fullmatch(r"[0-9]{4}", last4.strip()):
        return False
    return hmac.compare_digest(digits[-4:].encode(), last4.strip().encode())


# ---------------------------------------------------------------- submitting


@dataclass(frozen=True)
class PublicRequest:
    """What the form carries, already checked (web.pages.public)."""

    category: str  # a CATEGORIES code or OTHER
    description: str
    address: str
    latitude: float | None = None
    longitude: float | None = None
    phone: str | None = None
    anonymous: bool = False
    confidential: bool = False


@dataclass(frozen=True)
class Submitted:
    ticket: Ticket
    created: bool
    code: str


PHOTO_TYPES = frozenset({"jpg", "jpeg", "png"})
MAX_PHOTOS = 3
PUBLIC_ACTOR = "public"


def photo_limits(settings_limits: attachments.Limits, max_bytes: int) -> attachments.Limits:
    """Photos only (JPEG and PNG, by extension and first bytes, of those the centre takes),
    at most `max_bytes` each."""
    return attachments.Limits(
        max_bytes=min(max_bytes, settings_limits.max_bytes),
        types=PHOTO_TYPES & settings_limits.types,
    )


def district_of(address: str, districts: Sequence[str]) -> str | None:
    """The centre's district the address names (the longest name that fits first), so that
    a web request is placed and routed by locality as an operator's ticket is."""
    return next((d for d in sorted(districts, key=len, reverse=True) if d in address), None)


def ticket_data(request: PublicRequest, *, district: str | None = None) -> TicketCreate:
    name = CATEGORIES.get(request.category)
    return TicketCreate(
        channel=Channel.web,
        # An anonymous sender leaves no way back to them, and is never shown publicly.
        caller_phone=None if request.anonymous else request.phone,
        confidential=request.confidential or request.anonymous,
        address=request.address,
        district=district,
        latitude=request.latitude,
        longitude=request.longitude,
        title=name,
        description=request.description,
        category_code=request.category if name else None,
        category_name=name,
    )


def submit_request(
    session: Session,
    *,
    request: PublicRequest,
    photos: Sequence[attachments.Upload],
    store: attachments.FileStore,
    limits: attachments.Limits,
    secret: str,
    now: datetime,
    idempotency_key: str,
    tz: ZoneInfo,
    defer_duplicates: duplicates.Defer | None = None,
) -> Submitted:
    """The request through the same intake as a call (classified, dispatched, clocked);
    the same form sent twice (its `idempotency_key`) is one ticket. Every photo is checked
    before anything is written; they are kept on the lead unit's assignment when the rules
    dispatched the ticket, and listed on the ticket's record in any case. With no operator
    to see that a call reported the same matter, its likely duplicates are recorded for
    the dispatcher (hotline.duplicates.suggest_at_intake; by a worker with
    `defer_duplicates`)."""
    for photo in photos:
        attachments.check(photo, limits)
    districts = [u.district for u in reference.snapshot(session).units.values() if u.district]
    submission = intake.submit(
        session,
        data=ticket_data(request, district=district_of(request.address, districts)),
        actor=None,
        now=now,
        idempotency_key=idempotency_key,
        idempotency_scope="public-site",
        tz=tz,
    )
    ticket = submission.ticket
    if submission.created and photos:
        _keep_photos(session, ticket=ticket, photos=photos, store=store, limits=limits, now=now)
    if submission.created:
        duplicates.suggest_after_intake(session, ticket=ticket, now=now, defer=defer_duplicates)
    return Submitted(ticket, submission.created, lookup_code(secret, ticket.number))


def _keep_photos(
    session: Session,
    *,
    ticket: Ticket,
    photos: Sequence[attachments.Upload],
    store: attachments.FileStore,
    limits: attachments.Limits,
    now: datetime,
) -> None:
    lead = next(
        (
            a
            for a in assignments_of(session, ticket_id=saved_id(ticket), live_only=True)
            if a.role == AssignmentRole.lead
        ),
        None,
    )
    kept: list[dict[str, Any]] = []
    if lead is not None:
        rows = attachments.attach(
            session,
            store=store,
            limits=limits,
            assignment=lead,
            uploads=photos,
            actor=None,
            now=now,
        )
        for row in rows:
            row.uploaded_by = PUBLIC_ACTOR
            session.add(row)
        kept = [
            {"attachment_id": r.id, "filename": r.filename, "size": r.size, "sha256": r.sha256}
            for r in rows
        ]
    else:
        for photo in photos:
            key = secrets.token_hex(20)
            store.put(key, photo.data)
            kept.append(
                {
                    "storage_key": key,
                    "filename": attachments.clean_name(photo.filename),
                    "content_type": attachments.check(photo, limits),
                    "size": len(photo.data),
                    "sha256": hashlib.sha256(photo.data).hexdigest(),
                }
            )
    tickets.add_note(
        session,
        ticket=ticket,
        actor=PUBLIC_ACTOR,
        now=now,
        kind="citizen_photos",
        data={"photos": kept},
    )


# ---------------------------------------------------------------- following one request


def find_request(
    session: Session, *, secret: str, number: str, code: str = "", phone_last4: str = ""
) -> Ticket | None:
    """The request, if the code (or the phone's last four digits) fits its number; None
    for a wrong code and an unknown number alike."""
    number = number.strip()
    if not re.fullmatch(r"[0-9]{8}-[0-9]{4,10}", number):
        return None
    try:
        ticket = tickets.get_ticket_by_number(session, number)
    except NotFound:
        # The same work as a hit, so that timing does not tell which numbers exist.
        code_matches(secret, number, code or "x")
        return None
    if code and code_matches(secret, number, code):
        return ticket
    if phone_last4 and phone_matches(ticket, phone_last4):
        return ticket
    return None


PUBLIC_STATUS = {
    Status.intake: "received",
    Status.pending_dispatch: "received",
    Status.dispatched: "in_progress",
    Status.signed: "in_progress",
    Status.in_progress: "in_progress",
    Status.returned: "in_progress",
    Status.reopened: "in_progress",
    Status.replied: "in_progress",
    Status.reviewed: "replied",
    Status.merged: "closed",
    Status.closed: "closed",
    Status.archived: "closed",
}


@dataclass(frozen=True)
class Step:
    """One line of the public timeline: `kind` is received, dispatched, replied, closed,
    reopened, rated or merged; `unit` the unit's name; `text` the public reply."""

    kind: str
    at: datetime
    unit: str | None = None
    text: str | None = None
    satisfaction: str | None = None


@dataclass(frozen=True)
class PublicView:
    number: str
    status: str  # PUBLIC_STATUS
    category: str | None
    created_at: datetime
    steps: list[Step] = field(default_factory=list)
    reply: str | None = None
    can_rate: bool = False
    satisfaction: str | None = None
    merged: bool = False  # joined another request about the same matter, and follows it


def _steps(session: Session, ticket: Ticket, units: Any) -> list[Step]:
    steps: list[Step] = []
    pending_reply: str | None = None
    for event in tickets.events_of(session, saved_id(ticket)):
        action = event.action
        changed = event.data.get("set") or {}
        if action == "create":
            steps.append(Step("received", event.at))
        elif action in ("dispatch", "redispatch") and event.data.get("lead_unit"):
            code = str(event.data["lead_unit"])
            unit = units.get(code)
            steps.append(Step("dispatched", event.at, unit=unit.name if unit else code))
        elif action == "reply":
            pending_reply = changed.get("reply")
        elif action == "approve_reply":
            steps.append(Step("replied", event.at, text=pending_reply or ticket.reply))
        elif action == "close_at_intake":
            steps.append(Step("replied", event.at, text=changed.get("answer") or ticket.answer))
            steps.append(Step("closed", event.at))
        elif action == "callback":
            steps.append(Step("rated", event.at, satisfaction=changed.get("satisfaction")))
            steps.append(
                Step("reopened" if event.to_status == Status.reopened else "closed", event.at)
            )
        elif action in ("close", "close_merged"):
            steps.append(Step("closed", event.at))
        elif action == "reopen":
            steps.append(Step("reopened", event.at))
        elif action == "merge":
            steps.append(Step("merged", event.at))
    return steps


# What a merged request's sender sees of the ticket it joined: the work on it from then on,
# never its sender's rating.
_FOLLOWED = frozenset({"dispatched", "replied", "closed", "reopened"})


def _merged_into(
    session: Session, ticket: Ticket, steps: list[Step], units: Any
) -> tuple[Ticket, list[Step]] | None:
    """The ticket a merged request joined, and the sender's timeline: their own steps up
    to the merge (the merge naming the unit now handling the matter), then the other
    ticket's dispatches, approved replies (its sender's name and numbers masked), closing
    and reopening."""
    merged_at = next((s.at for s in reversed(steps) if s.kind == "merged"), None)
    if ticket.parent_id is None or merged_at is None:
        return None
    parent = session.get(Ticket, ticket.parent_id)
    if parent is None:
        return None
    theirs = _steps(session, parent, units)
    handling = next(
        (s.unit for s in reversed(theirs) if s.kind == "dispatched" and s.at <= merged_at), None
    )
    own = [s for s in steps if s.at < merged_at or s.kind != "closed"]
    own = [s if s.kind != "merged" else Step("merged", s.at, unit=handling) for s in own]
    names = [parent.caller_name, (parent.caller_name or "").replace(" ", "")]
    later = [
        Step(
            s.kind,
            s.at,
            unit=s.unit,
            text=mask_text(s.text, names=names) if s.text else None,
        )
        for s in theirs
        if s.at >= merged_at and s.kind in _FOLLOWED
    ]
    return parent, own + later


def public_view(session: Session, *, ticket: Ticket) -> PublicView:
    """What the sender sees: received, dispatched to which unit, the reply once the centre
    approved it, closing, rating and reopening — never the centre's internal notes, the
    handlers' names or another unit's working. A request merged (并单) into another
    follows the other's progress: "one reply reaches every caller"."""
    units = reference.snapshot(session).units
    steps = _steps(session, ticket, units)
    status = PUBLIC_STATUS[ticket.status]
    followed = _merged_into(session, ticket, steps, units)
    if followed is not None:
        parent, steps = followed
        if ticket.status == Status.merged:
            status = PUBLIC_STATUS[parent.status]
    reply = next((s.text for s in reversed(steps) if s.kind == "replied"), None)
    return PublicView(
        number=ticket.number,
        status=status,
        category=ticket.category_name,
        created_at=ticket.created_at,
        steps=steps,
        reply=reply,
        can_rate=ticket.status == Status.reviewed,
        satisfaction=ticket.satisfaction.value if ticket.satisfaction else None,
        merged=followed is not None,
    )


def rate(
    session: Session,
    *,
    ticket: Ticket,
    satisfaction: Satisfaction,
    now: datetime,
    comment: str | None = None,
) -> Ticket:
    """The sender's rating of the approved reply, as the phone callback records it:
    satisfied closes the request, dissatisfied reopens it and sends it back to its units."""
    if ticket.status != Status.reviewed:
        raise Conflict(
            f"ticket {ticket.number} is {ticket.status.value}; it can be rated once replied",
            status=ticket.status.value,
        )
    result = closing.callback(
        session,
        ticket_id=saved_id(ticket),
        satisfaction=satisfaction,
        actor=None,
        now=now,
        comment=comment or "rated by the sender on the public site",
    )
    return result.ticket


# ---------------------------------------------------------------- the public list and map


@dataclass(frozen=True)
class PublicItem:
    category: str | None
    district: str | None
    street: str | None
    latitude: float | None  # rounded to 0.01°, about a kilometre
    longitude: float | None
    date: str  # the centre's local day
    status: str  # PUBLIC_STATUS


ROUNDING = 2  # decimal places of a public coordinate
RECENT_DAYS = 30
MAX_ITEMS = 500


def _rough(value: float | None) -> float | None:
    return None if value is None else round(value, ROUNDING)


def recent_requests(
    session: Session,
    *,
    now: datetime,
    tz: ZoneInfo,
    days: int = RECENT_DAYS,
    limit: int = MAX_ITEMS,
) -> list[PublicItem]:
    """The newest requests of the last `days`, confidential (and anonymous) ones left out:
    category, district and street, a rounded point, the day and the public status only.
    Only those columns are read (ix_ticket_created_id gives the order)."""
    rows = session.execute(
        select(
            col(Ticket.category_name),
            col(Ticket.district),
            col(Ticket.street),
            col(Ticket.latitude),
            col(Ticket.longitude),
            col(Ticket.created_at),
            col(Ticket.status),
        )
        .where(
            col(Ticket.created_at) >= now - timedelta(days=days),
            col(Ticket.confidential).is_(False),
        )
        .order_by(col(Ticket.created_at).desc(), col(Ticket.id).desc())
        .limit(limit)
    )
    return [
        PublicItem(
            category=category,
            district=district,
            street=street,
            latitude=_rough(lat),
            longitude=_rough(lon),
            date=created.astimezone(tz).date().isoformat(),
            status=PUBLIC_STATUS[Status(status)],
        )
        for category, district, street, lat, lon, created, status in rows
    ]


def geojson(items: Sequence[PublicItem]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection (RFC 7946: [longitude, latitude]) of the located items."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [item.longitude, item.latitude]},
                "properties": {
                    "category": item.category,
                    "district": item.district,
                    "street": item.street,
                    "date": item.date,
                    "status": item.status,
                },
            }
            for item in items
            if item.latitude is not None and item.longitude is not None
        ],
    }
