"""Filing an Open311 request into the same intake as a call, and reading requests back.

POST: the service code is the category, the service's name the title (so the rule pack
sees the words a caller would have said), the attributes fill the intake fields they name;
`hotline.intake.submit` then classifies, dispatches and arms the clocks exactly as for a
call, with the channel `open311`; the sender's e-mail, the client's account id and the
media link go on the ticket's record for the centre's staff (never fetched, never shown
back), and its likely duplicates are recorded for the dispatcher (hotline.duplicates).
Intake here is synchronous, so the request id (the ticket number) comes back at once. A
token comes back as well, for clients that follow the token path: the ticket number with a
MAC under the installation's secret, so `tokens/{token}` checks it and answers the number
without a table of its own (keeping the token as the submission's idempotency key cost a
savepoint, a look-up and an insert: half the POST's throughput)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import select as sa_select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from core.errors import InvalidInput, NotFound
from dispatch import reference
from dispatch.models import Assignment, AssignmentRole, AssignmentStatus
from hotline import duplicates, intake
from hotline.open311 import clients, mapping, services
from hotline.open311.models import Open311Client
from tickets.models import Channel, RequestType, Status, Ticket, TicketCreate, Urgency

WINDOW = timedelta(days=90)  # the spec's longest date range, and the default one
PAGE_SIZE = 1000  # the spec's default "first 1000 requests"
MAX_IDS = 200
MAX_DESCRIPTION = 4000
MAX_MEDIA_URL = 500
MAX_EMAIL = 254
MAX_ACCOUNT_ID = 100
_EMAIL = re.compile(r"^[^@\s<>\"'(),;:]{1,64}@[^@\s<>\"'(),;:]+\.[^@\s<>\"'(),;:.]{2,63}$")
SUBMITTED = "open311_submission"  # the note of what was filed, kind
# The note's keys that reach the sender, shown under the rule of the caller's name and
# number (web.api.schemas.event_reads): not to who may not see a confidential caller.
SENDER_CONTACT = frozenset({"email", "account_id"})
ACTOR = "open311"


class Rejected(InvalidInput):
    """A request the spec's 400 answers, every problem named."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems), problems=list(problems))
        self.problems = list(problems)


@dataclass
class PostedRequest:
    """A POST's parameters as the client sent them (text), attributes by code."""

    service_code: str = ""
    lat: str = ""
    long: str = ""
    address_string: str = ""
    address_id: str = ""
    email: str = ""
    device_id: str = ""
    account_id: str = ""
    first_name: str = ""
    last_name: str = ""
    phone: str = ""
    description: str = ""
    media_url: str = ""
    attributes: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Filed:
    service_request_id: str
    token: str
    service_notice: str
    account_id: str | None


def _coordinate(text: str, name: str, bound: float, problems: list[str]) -> float | None:
    try:
        value = float(text)
    except ValueError:
        problems.append(f"{name}: {text!r} is not a number")
        return None
    if not math.isfinite(value) or not -bound <= value <= bound:
        problems.append(f"{name}: {text!r} is outside -{bound:g}..{bound:g} (WGS-84 degrees)")
        return None
    return value


def _location(posted: PostedRequest, problems: list[str]) -> dict[str, Any]:
    lat, lon = posted.lat.strip(), posted.long.strip()
    address, address_id = posted.address_string.strip(), posted.address_id.strip()
    found: dict[str, Any] = {}
    if lat or lon:
        if not (lat and lon):
            problems.append("lat and long are given together or not at all")
        else:
            found["latitude"] = _coordinate(lat, "lat", 90, problems)
            found["longitude"] = _coordinate(lon, "long", 180, problems)
    elif not (address or address_id):
        problems.append("a location is required: lat and long, address_string or address_id")
    if len(address) > 250:
        problems.append("address_string is longer than 250 characters")
    if len(address_id) > 40:
        problems.append("address_id is longer than 40 characters")
    found["address"] = address or (f"address_id {address_id}" if address_id else None)
    return found


def _attributes(posted: PostedRequest, problems: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for code in sorted(posted.attributes):
        attribute = services.ATTRIBUTES_BY_CODE.get(code)
        if attribute is None:
            problems.append(f"attribute[{code}] is not an attribute of this service")
            continue
        value, problem = attribute.check(posted.attributes[code])
        if problem:
            problems.append(problem)
        elif value is not None:
            values[code] = value
    for attribute in services.ATTRIBUTES:
        if attribute.required and attribute.code not in posted.attributes:
            problems.append(f"attribute[{attribute.code}] ({attribute.description}) is required")
    return values


def _media_url(text: str, problems: list[str]) -> str | None:
    """A link to the sender's photo or video, for a person to open: an absolute http(s)
    URL to a named host, without credentials, at most MAX_MEDIA_URL characters. The
    server never fetches it (no request to an address a client chose)."""
    url = text.strip()
    if not url:
        return None
    problem = f"media_url must be an http(s) URL of at most {MAX_MEDIA_URL} characters"
    if len(url) > MAX_MEDIA_URL or any(c.isspace() or c in '<>"\\' for c in url):
        problems.append(problem)
        return None
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        problems.append(problem)
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or not port_ok:
        problems.append(problem)
        return None
    if parts.username is not None or parts.password is not None:
        problems.append("media_url must not carry a user name or password")
        return None
    return url


def _email(text: str, problems: list[str]) -> str | None:
    email = text.strip()
    if not email:
        return None
    if len(email) > MAX_EMAIL or not _EMAIL.match(email):
        problems.append(f"email: {email[:60]!r} is not an e-mail address")
        return None
    return email


def _kept(posted: PostedRequest, problems: list[str]) -> dict[str, str]:
    """What the centre keeps of the sender beyond the ticket's fields, for its staff only:
    the e-mail (a way to reach them), the client's account id (the partner can reach them
    through it) and the media link. Not the device_id: it identifies a phone, not a
    person to answer, and handling the request does not need it (PIPL's "minimum
    necessary")."""
    account = posted.account_id.strip()
    if len(account) > MAX_ACCOUNT_ID:
        problems.append(f"account_id is longer than {MAX_ACCOUNT_ID} characters")
    kept = {
        "email": _email(posted.email, problems),
        "account_id": account[:MAX_ACCOUNT_ID] or None,
        "media_url": _media_url(posted.media_url, problems),
    }
    return {k: v for k, v in kept.items() if v}


def _ticket_data(
    posted: PostedRequest, service: services.Service
) -> tuple[TicketCreate, dict[str, str]]:
    """The ticket's fields, and what else the centre keeps (``_kept``)."""
    problems: list[str] = []
    kept = _kept(posted, problems)
    location = _location(posted, problems)
    values = _attributes(posted, problems)
    description = posted.description.strip()
    if len(description) > MAX_DESCRIPTION:
        problems.append(f"description is longer than {MAX_DESCRIPTION} characters")
    first, last = posted.first_name.strip(), posted.last_name.strip()
    # 张 + 三丰 is 张三丰; John + Smith is John Smith
    name = f"{first} {last}".strip() if (first + last).isascii() else last + first
    if len(name) > 100:
        problems.append("first_name and last_name are longer than 100 characters together")
    if problems:
        raise Rejected(problems)
    detail = values.get("ADDRESS_DETAIL")
    address = " ".join(p for p in (location.get("address"), detail) if p) or None
    text = description or service.name
    data: dict[str, Any] = {
        "channel": Channel.open311,
        "caller_name": name or None,
        "caller_phone": posted.phone.strip() or None,
        "address": address[:300] if address else None,
        "latitude": location.get("latitude"),
        "longitude": location.get("longitude"),
        "title": service.name,
        "description": text,
        "category_code": service.code,
        "category_name": service.name,
        "urgency": Urgency(values.get("URGENCY", Urgency.normal.value)),
        "request_type": RequestType(values.get("REQUEST_TYPE", RequestType.help.value)),
    }
    if "OCCURRED_AT" in values:
        data["occurred_at"] = datetime.fromisoformat(values["OCCURRED_AT"])
    try:
        return TicketCreate.model_validate(data), kept
    except ValidationError as exc:
        names = {"caller_phone": "phone", "caller_name": "first_name/last_name"}
        raise Rejected(
            [
                f"{names.get(str(e['loc'][0]), str(e['loc'][0]))}: {e['msg']}"
                for e in exc.errors(include_url=False)
            ]
        ) from None


def file_request(
    session: Session,
    *,
    client: clients.Verified | Open311Client,
    posted: PostedRequest,
    now: datetime,
    tz: ZoneInfo,
    secret: str,
    fallback_unit_code: str | None = None,
    defer_duplicates: duplicates.Defer | None = None,
) -> Filed:
    code = posted.service_code.strip()
    if not code:
        raise Rejected(["service_code is required"])
    service = services.get_service(session, code=code)
    data, kept = _ticket_data(posted, service)
    # the provenance and the sender's other details, on the ticket's record for its staff,
    # written with the ticket
    provenance = intake.Note(
        ACTOR, SUBMITTED, {"client_id": client.id, "client": client.name, **kept}
    )
    submission = intake.submit(
        session,
        data=data,
        actor=None,
        now=now,
        fallback_unit_code=fallback_unit_code,
        tz=tz,
        notes=[provenance],
    )
    ticket = submission.ticket
    duplicates.suggest_after_intake(session, ticket=ticket, now=now, defer=defer_duplicates)
    notice = f"已受理，工单编号 {ticket.number}"
    if submission.dispatch and submission.dispatch.assignments:
        units = reference.snapshot(session).units_by_id
        lead = submission.dispatch.assignments[0]
        notice += f"，已派至{units[lead.unit_id].name}办理"
    else:
        notice += "，正在分派承办单位"
    return Filed(
        service_request_id=ticket.number,
        token=make_token(ticket.number, secret=secret),
        service_notice=notice,
        account_id=posted.account_id.strip() or None,
    )


def _mac(number: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), f"open311-token:{number}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:16]).decode().rstrip("=")


def make_token(number: str, *, secret: str) -> str:
    return f"{number}.{_mac(number, secret)}"


def resolve_token(session: Session, *, token: str, secret: str) -> str:
    """The request id a POST's token stands for."""
    number, _, mac = token.partition(".")
    if len(token) > 100 or not hmac.compare_digest(mac, _mac(number, secret)):
        raise NotFound(f"no request for token {token!r}")
    found = session.exec(select(Ticket.number).where(col(Ticket.number) == number)).first()
    if found is None:
        raise NotFound(f"no request for token {token!r}")
    return found


# ---------------------------------------------------------------- reading


def _lead(column: Any) -> Any:
    """A column of the ticket's lead assignment (主办): the live one, or the last one that
    finished; read along with the ticket, one index look-up per row."""
    return (
        select(column)
        .where(
            col(Assignment.ticket_id) == col(Ticket.id),
            col(Assignment.role) == AssignmentRole.lead,
            col(Assignment.status) != AssignmentStatus.withdrawn,
        )
        .order_by(col(Assignment.id).desc())
        .limit(1)
        .correlate(Ticket)
        .scalar_subquery()
    )


# Only what a request shows (hotline.open311.mapping.Shown), not whole tickets: a page is
# up to 1000 of them.
_PARENT = aliased(Ticket)
# the request a merged one joined, named unless it is confidential
_MERGED_INTO = (
    select(col(_PARENT.number))
    .where(col(_PARENT.id) == col(Ticket.parent_id), col(_PARENT.confidential).is_(False))
    .correlate(Ticket)
    .scalar_subquery()
)
_SHOWN = sa_select(
    *(getattr(Ticket, name) for name in mapping.SHOWN_COLUMNS),
    _lead(Assignment.unit_id).label("lead_unit_id"),
    _lead(Assignment.close_due_at).label("lead_close_due_at"),
    _MERGED_INTO.label("merged_into"),
)


def _public(session: Session, rows: Sequence[Any], tz: ZoneInfo) -> list[dict[str, Any]]:
    units = reference.snapshot(session).units_by_id
    names = services.catalogue(session).by_code
    found = []
    for row in rows:
        service = names.get(row.category_code or "")
        unit = units.get(row.lead_unit_id) if row.lead_unit_id is not None else None
        found.append(
            mapping.public_request(
                row,
                lead=mapping.Lead(unit.name, row.lead_close_due_at) if unit else None,
                service_name=service.name if service else None,
                tz=tz,
                merged_into=row.merged_into if row.status == Status.merged else None,
            )
        )
    return found


def get_request(session: Session, *, request_id: str, tz: ZoneInfo) -> dict[str, Any]:
    rows = session.execute(
        _SHOWN.where(col(Ticket.number) == request_id, col(Ticket.confidential).is_(False))
    ).all()
    if not rows:
        # a confidential ticket answers as a missing one
        raise NotFound(f"no service request {request_id!r}")
    return _public(session, rows, tz)[0]


@dataclass(frozen=True)
class RequestQuery:
    ids: tuple[str, ...] = ()
    service_codes: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    states: frozenset[str] = frozenset()
    page: int = 1
    page_size: int = PAGE_SIZE


def parse_query(params: Mapping[str, str]) -> RequestQuery:
    """GET requests' parameters; every problem named (400)."""
    problems: list[str] = []

    def listed(name: str) -> tuple[str, ...]:
        return tuple(v.strip() for v in params.get(name, "").split(",") if v.strip())

    def moment(name: str) -> datetime | None:
        text = params.get(name, "").strip()
        if not text:
            return None
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            problems.append(f"{name}: {text!r} is not an ISO 8601 date and time")
            return None
        if value.tzinfo is None:
            problems.append(f"{name}: {text!r} needs its time zone (Z or +08:00)")
            return None
        return value

    def number(name: str, default: int, top: int) -> int:
        text = params.get(name, "").strip()
        if not text:
            return default
        if not text.isdigit() or not 1 <= int(text) <= top:
            problems.append(f"{name}: {text!r} is not a whole number from 1 to {top}")
            return default
        return int(text)

    ids = listed("service_request_id")
    if len(ids) > MAX_IDS:
        problems.append(f"service_request_id lists more than {MAX_IDS} ids")
    states = set(listed("status"))
    if states - {mapping.OPEN, mapping.CLOSED}:
        bad = ", ".join(sorted(states - {mapping.OPEN, mapping.CLOSED}))
        problems.append(f"status: {bad} is not open or closed")
    start, end = moment("start_date"), moment("end_date")
    if start and end:
        if start > end:
            problems.append("start_date is after end_date")
        elif end - start > WINDOW:
            problems.append("start_date to end_date spans more than 90 days")
    query = RequestQuery(
        ids=ids,
        service_codes=listed("service_code"),
        start=start,
        end=end,
        states=frozenset(states),
        page=number("page", 1, 10_000),
        page_size=number("page_size", PAGE_SIZE, PAGE_SIZE),
    )
    if problems:
        raise Rejected(problems)
    return query


def list_requests(
    session: Session, *, query: RequestQuery, now: datetime, tz: ZoneInfo
) -> list[dict[str, Any]]:
    """Newest first. With ids, those requests and no other filter (the spec); otherwise
    within a window of at most 90 days, by default the last 90."""
    stmt = _SHOWN.where(col(Ticket.confidential).is_(False))
    if query.ids:
        stmt = stmt.where(col(Ticket.number).in_(query.ids))
    else:
        end = query.end or (query.start + WINDOW if query.start else now)
        start = query.start or end - WINDOW
        stmt = stmt.where(col(Ticket.created_at) >= start, col(Ticket.created_at) <= end)
        if query.service_codes:
            stmt = stmt.where(col(Ticket.category_code).in_(query.service_codes))
        if query.states and query.states != {mapping.OPEN, mapping.CLOSED}:
            stmt = stmt.where(
                col(Ticket.status).in_(sorted(mapping.statuses_for(set(query.states))))
            )
    stmt = (
        stmt.order_by(col(Ticket.created_at).desc(), col(Ticket.id).desc())
        .offset((query.page - 1) * query.page_size)
        .limit(query.page_size)
    )
    return _public(session, list(session.execute(stmt).all()), tz)
