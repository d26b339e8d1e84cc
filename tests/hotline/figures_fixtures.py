"""A small hand-made city for the figures' tests (tests/hotline/test_figures*.py): eight
tickets, three units (CITY with its child STREET, and OTHER), their lead assignments with
stored clocks and the audit events that matter. Every figure's right answer is worked out
by hand in tests/hotline/test_figures.py from the table below.

Times are Beijing time, December 2026 (1 Dec is a Tuesday). The period is [1 Dec 00:00,
8 Dec 00:00); the clocks are judged at NOW = 9 Dec 10:00. The calendar CAL has 3 Dec and
8 Dec as holidays (administrator's overrides), so weekends 5–6 Dec are off too.

ticket  created  channel district category caller  what happened
t1      1 09:00  phone   城区     020301   P1      直接办结 (close_at_intake); no unit
t2      1 09:30  web     城区     020302   P1      CITY: signed exactly at sign_due, replied
                                                   exactly at reply_due, completed before
                                                   close_due; approved, called back 满意
t3      2 09:00  phone   郊区     020301   P1      STREET: signed 1 h late, replied 24 h late,
                                                   completed on time; approved, called back
                                                   基本满意 — a repeat of t1 (same caller and
                                                   category, 1 day earlier)
t4      1 10:00  phone   城区     0401     P3      OTHER returned it (退单) before signing,
                                                   改派 to CITY: signed on time, never replied,
                                                   reply due 3 Dec 11:30, close due 5 Dec 11:30
t5      1 10:00  web     城区     020302   —       merged into t2 (并单), closed with it,
                                                   carries t2's 满意
t6      30 Nov   api     郊区     0401     P2      outside the period (CITY)
t7      2 10:00  phone   城区     020301   —       CITY on a working-day policy: reply due 2
                                                   working days later = 7 Dec 10:00 (3 Dec
                                                   holiday, 5–6 Dec weekend); one approved
                                                   extension; signed on time, never replied;
                                                   close due 14 Dec
t8      3 09:00  api     郊区     0401     P2      OTHER: signed and replied on time, completed
                                                   exactly at close_due; approved, closed
                                                   without a callback — a repeat of t6
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session

from dispatch import sla
from dispatch.calendar import WorkCalendar
from dispatch.models import (
    Assignment,
    AssignmentRole,
    AssignmentStatus,
    ClockUnit,
    SlaPolicy,
    Unit,
    UnitLevel,
)
from tickets.lifecycle import Action
from tickets.models import Channel, Satisfaction, Status, Ticket, TicketEvent

SH = ZoneInfo("Asia/Shanghai")
CAL = WorkCalendar({date(2026, 12, 3): False, date(2026, 12, 8): False})


def L(day: int, h: int, m: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, h, m, tzinfo=SH).astimezone(UTC)


START, END, NOW = L(1, 0), L(8, 0), L(9, 10)
H = timedelta(hours=1)


@dataclass
class City:
    units: dict[str, int] = field(default_factory=dict)
    tickets: dict[str, int] = field(default_factory=dict)


def _policy(session: Session, name: str, unit: ClockUnit) -> int:
    policy = SlaPolicy(name=f"{name}-{secrets.token_hex(3)}", reply_unit=unit)
    session.add(policy)
    session.flush()
    assert policy.id is not None
    return policy.id


def _unit(session: Session, code: str, parent: int | None) -> int:
    unit = Unit(
        code=f"{code}-{secrets.token_hex(3)}",
        name=code,
        level=UnitLevel.city if parent is None else UnitLevel.street,
        parent_id=parent,
    )
    session.add(unit)
    session.flush()
    assert unit.id is not None
    return unit.id


def _ticket(session: Session, created: datetime, **fields: object) -> Ticket:
    ticket = Ticket(
        number=f"F{secrets.token_hex(6)}",
        description="x",
        created_at=created,
        updated_at=created,
        **fields,  # type: ignore[arg-type]
    )
    session.add(ticket)
    session.flush()
    return ticket


def _events(session: Session, ticket: Ticket, *steps: tuple[Action, datetime]) -> None:
    assert ticket.id is not None
    for seq, (action, at) in enumerate(steps, start=1):
        session.add(
            TicketEvent(ticket_id=ticket.id, seq=seq, at=at, actor="test", action=action.value)
        )


def _lead(
    session: Session,
    ticket: Ticket,
    unit: int,
    policy: int,
    *,
    started: datetime,
    sign_due: datetime,
    reply_due: datetime,
    close_due: datetime,
    status: AssignmentStatus,
    signed: datetime | None = None,
    replied: datetime | None = None,
    ended: datetime | None = None,
    returned: str | None = None,
    extensions: int = 0,
) -> None:
    assert ticket.id is not None
    session.add(
        Assignment(
            ticket_id=ticket.id,
            unit_id=unit,
            role=AssignmentRole.lead,
            status=status,
            policy_id=policy,
            dispatched_by="test",
            started_at=started,
            sign_due_at=sign_due,
            reply_due_at=reply_due,
            close_due_at=close_due,
            signed_at=signed,
            replied_at=replied,
            ended_at=ended,
            return_reason_code=returned,
            extension_count=extensions,
        )
    )


def build_city(session: Session) -> City:
    city = City()
    hours = _policy(session, "fig-hours", ClockUnit.hours)
    workdays = _policy(session, "fig-workdays", ClockUnit.workdays)
    u = city.units
    u["CITY"] = _unit(session, "CITY", None)
    u["STREET"] = _unit(session, "STREET", u["CITY"])
    u["OTHER"] = _unit(session, "OTHER", None)
    done = AssignmentStatus.completed
    t = city.tickets

    t1 = _ticket(
        session,
        L(1, 9),
        channel=Channel.phone,
        district="城区",
        category_code="020301",
        caller_phone="P1",
        status=Status.closed,
        closed_at=L(1, 9, 5),
    )
    _events(session, t1, (Action.close_at_intake, L(1, 9, 5)))

    t2 = _ticket(
        session,
        L(1, 9, 30),
        channel=Channel.web,
        district="城区",
        category_code="020302",
        caller_phone="P1",
        status=Status.closed,
        satisfaction=Satisfaction.satisfied,
        closed_at=L(4, 12),
    )
    _lead(
        session, t2, u["CITY"], hours,
        started=L(1, 10), sign_due=L(1, 12), reply_due=L(3, 10), close_due=L(5, 10),
        signed=L(1, 12), replied=L(3, 10), ended=L(4, 10), status=done,
    )  # fmt: skip
    _events(
        session, t2, (Action.dispatch, L(1, 10)), (Action.approve_reply, L(3, 11)),
        (Action.callback, L(4, 10)),
    )  # fmt: skip

    t3 = _ticket(
        session,
        L(2, 9),
        channel=Channel.phone,
        district="郊区",
        category_code="020301",
        caller_phone="P1",
        status=Status.closed,
        satisfaction=Satisfaction.basically_satisfied,
        closed_at=L(5, 11),
    )
    _lead(
        session, t3, u["STREET"], hours,
        started=L(2, 10), sign_due=L(2, 12), reply_due=L(4, 10), close_due=L(6, 10),
        signed=L(2, 13), replied=L(5, 10), ended=L(5, 11), status=done,
    )  # fmt: skip
    _events(
        session, t3, (Action.dispatch, L(2, 10)), (Action.approve_reply, L(5, 10, 30)),
        (Action.callback, L(5, 11)),
    )  # fmt: skip

    t4 = _ticket(
        session,
        L(1, 10),
        channel=Channel.phone,
        district="城区",
        category_code="0401",
        caller_phone="P3",
        status=Status.signed,
        return_count=1,
    )
    _lead(
        session, t4, u["OTHER"], hours,
        started=L(1, 10), sign_due=L(1, 12), reply_due=L(3, 10), close_due=L(5, 10),
        ended=L(1, 11), returned="wrong_mandate", status=AssignmentStatus.withdrawn,
    )  # fmt: skip
    _lead(
        session, t4, u["CITY"], hours,
        started=L(1, 11, 30), sign_due=L(1, 13, 30), reply_due=L(3, 11, 30),
        close_due=L(5, 11, 30), signed=L(1, 13), status=AssignmentStatus.signed,
    )  # fmt: skip
    _events(
        session, t4, (Action.dispatch, L(1, 10)), (Action.return_, L(1, 11)),
        (Action.redispatch, L(1, 11, 30)), (Action.sign, L(1, 13)),
    )  # fmt: skip

    t5 = _ticket(
        session,
        L(1, 10),
        channel=Channel.web,
        district="城区",
        category_code="020302",
        status=Status.closed,
        parent_id=t2.id,
        satisfaction=Satisfaction.satisfied,
        closed_at=L(4, 10),
    )
    _events(session, t5, (Action.merge, L(1, 11)), (Action.close_merged, L(4, 10)))

    t6 = _ticket(
        session,
        L(30, 9, month=11),
        channel=Channel.api,
        district="郊区",
        category_code="0401",
        caller_phone="P2",
        status=Status.dispatched,
    )
    _lead(
        session, t6, u["CITY"], hours,
        started=L(30, 10, month=11), sign_due=L(30, 12, month=11), reply_due=L(2, 10),
        close_due=L(4, 10), status=AssignmentStatus.dispatched,
    )  # fmt: skip

    t7 = _ticket(
        session,
        L(2, 10),
        channel=Channel.phone,
        district="城区",
        category_code="020301",
        status=Status.signed,
    )
    _lead(
        session, t7, u["CITY"], workdays,
        started=L(2, 10), sign_due=L(2, 12),
        reply_due=sla.add_time(L(2, 10), 2, ClockUnit.workdays, CAL),
        close_due=L(14, 10), signed=L(2, 11), extensions=1, status=AssignmentStatus.signed,
    )  # fmt: skip

    t8 = _ticket(
        session,
        L(3, 9),
        channel=Channel.api,
        district="郊区",
        category_code="0401",
        caller_phone="P2",
        status=Status.closed,
        closed_at=L(6, 10),
    )
    _lead(
        session, t8, u["OTHER"], hours,
        started=L(3, 10), sign_due=L(3, 12), reply_due=L(5, 10), close_due=L(6, 10),
        signed=L(3, 11), replied=L(4, 10), ended=L(6, 10), status=done,
    )  # fmt: skip
    _events(
        session, t8, (Action.dispatch, L(3, 10)), (Action.approve_reply, L(4, 11)),
        (Action.close, L(6, 10)),
    )  # fmt: skip

    for name, ticket in zip(
        ("t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"),
        (t1, t2, t3, t4, t5, t6, t7, t8),
        strict=True,
    ):
        assert ticket.id is not None
        t[name] = ticket.id
    session.flush()
    return city
