"""Dispatch operations: route a ticket to its units, and everything a unit and the centre do
with it afterwards. Every step keeps the assignment history (a re-dispatch withdraws the
old assignment and adds a new one), arms the right SLA clock, and writes the ticket's audit.

Role checks (who may call what) live in the web layer; here we only enforce what is true
whoever calls: a handler acts for their own unit only, and the lifecycle must allow it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlmodel import Session, col

from accounts.models import Role, User
from core.db import build_row
from core.errors import Conflict, InvalidInput, NotFound
from dispatch import escalation, policies, reference, sla
from dispatch.calendar import WorkCalendar
from dispatch.models import (
    Assignment,
    AssignmentRole,
    AssignmentStatus,
    Clock,
    ClockUnit,
    Escalation,
    ExtensionRequest,
    ExtensionStatus,
    SlaPolicy,
    Unit,
)
from dispatch.rules import TicketFacts
from tickets import service as tickets
from tickets.lifecycle import Action, next_status
from tickets.models import Satisfaction, Status, Ticket

DEFAULT_TZ = ZoneInfo("Asia/Shanghai")
LIVE = (
    AssignmentStatus.dispatched,
    AssignmentStatus.signed,
    AssignmentStatus.replied,
    AssignmentStatus.returned,
)
RETURN_REASONS = {"wrong_locality": "属地不符", "wrong_mandate": "职能不符", "other": "其他"}

Actor = User | None


def who(actor: Actor) -> str:
    return "system" if actor is None else f"{actor.role.value}:{actor.username}"


@dataclass
class DispatchResult:
    ticket: Ticket
    assignments: list[Assignment] = field(default_factory=list)
    rule: str | None = None
    queued: bool = False
    explanation: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- lookups


def assignments_of(
    session: Session, *, ticket_id: int, live_only: bool = False
) -> list[Assignment]:
    stmt = select(Assignment).where(Assignment.ticket_id == ticket_id)
    if live_only:
        stmt = stmt.where(col(Assignment.status).in_(LIVE))
    return list(session.scalars(stmt.order_by(Assignment.id)))


def _unit(session: Session, code: str) -> Unit:
    unit = reference.snapshot(session).units.get(code)
    if unit is None or not unit.active:
        raise InvalidInput(f"unit {code!r} does not exist or is inactive", unit=code)
    return unit


def _assignment(session: Session, assignment_id: int) -> Assignment:
    assignment = session.get(Assignment, assignment_id)
    if assignment is None:
        raise NotFound(f"assignment {assignment_id} does not exist", assignment_id=assignment_id)
    return assignment


def _lead(session: Session, ticket_id: int) -> Assignment | None:
    return session.scalars(
        select(Assignment)
        .where(
            Assignment.ticket_id == ticket_id,
            Assignment.role == AssignmentRole.lead,
            col(Assignment.status).in_(LIVE),
        )
        .order_by(col(Assignment.id).desc())
    ).first()


def _require_own_unit(actor: Actor, assignment: Assignment) -> None:
    if actor is not None and actor.role == Role.handler and actor.unit_id != assignment.unit_id:
        # Do not reveal other units' work: a stranger's assignment simply is not there.
        raise NotFound(f"assignment {assignment.id} does not exist", assignment_id=assignment.id)


def _required(text: str | None, message: str) -> str:
    if not text or not text.strip():
        raise InvalidInput(message)
    return text.strip()


def _lock(session: Session, ticket_id: int) -> Ticket:
    return tickets.get_ticket(session, ticket_id, for_update=True)


# ---------------------------------------------------------------- creating assignments


def _deadlines(start: datetime, policy: SlaPolicy, calendar: WorkCalendar) -> dict[str, datetime]:
    return {
        "sign_due_at": sla.due_at(start, policy, Clock.sign, calendar),
        "reply_due_at": sla.due_at(start, policy, Clock.reply, calendar),
        "close_due_at": sla.due_at(start, policy, Clock.close, calendar),
    }


def _new_assignments(
    session: Session,
    *,
    ticket: Ticket,
    lead: Unit,
    co_units: Sequence[Unit],
    policy: SlaPolicy,
    calendar: WorkCalendar,
    rule_name: str | None,
    actor: Actor,
    now: datetime,
) -> list[Assignment]:
    """The assignments of one dispatch, clocks armed, not yet added to the session."""
    if any(u.id == lead.id for u in co_units):
        raise InvalidInput(f"unit {lead.code} cannot be both lead and co-handling unit")
    if len({u.id for u in co_units}) != len(co_units):
        raise InvalidInput("a co-handling unit is named twice")
    deadlines = _deadlines(now, policy, calendar)
    made = []
    for unit, role in [(lead, AssignmentRole.lead), *((u, AssignmentRole.co) for u in co_units)]:
        # Every value is ours or comes from validated reference data.
        assignment = build_row(
            Assignment,
            {
                "ticket_id": ticket.id,
                "unit_id": unit.id,
                "role": role,
                "policy_id": policy.id,
                "rule_name": rule_name,
                "dispatched_by": who(actor),
                "started_at": now,
                **deadlines,
            },
        )
        escalation.arm(assignment, clock=Clock.sign, policy=policy, calendar=calendar)
        made.append(assignment)
    return made


def _withdraw(
    session: Session,
    *,
    ticket_id: int,
    now: datetime,
    status: AssignmentStatus = AssignmentStatus.withdrawn,
) -> list[Assignment]:
    live = assignments_of(session, ticket_id=ticket_id, live_only=True)
    for assignment in live:
        assignment.status = status
        assignment.ended_at = now
        escalation.disarm(assignment)
        session.add(assignment)
    return live


def _assignment_summary(
    assignments: Sequence[Assignment], units: dict[int, Unit], policy: SlaPolicy
) -> dict[str, Any]:
    lead = next(a for a in assignments if a.role == AssignmentRole.lead)
    return {
        "lead_unit": units[lead.unit_id].code,
        "co_units": [units[a.unit_id].code for a in assignments if a.role == AssignmentRole.co],
        "policy": policy.name,
        "sign_due_at": lead.sign_due_at.isoformat(),
        "reply_due_at": lead.reply_due_at.isoformat(),
        "close_due_at": lead.close_due_at.isoformat(),
    }


def _route(
    session: Session,
    *,
    ticket: Ticket,
    action: Action,
    lead: Unit,
    co_units: Sequence[Unit],
    policy: SlaPolicy,
    rule_name: str | None,
    actor: Actor,
    now: datetime,
    changes: dict[str, Any] | None = None,
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> list[Assignment]:
    calendar = reference.snapshot(session).calendar
    made = _new_assignments(
        session,
        ticket=ticket,
        lead=lead,
        co_units=co_units,
        policy=policy,
        calendar=calendar,
        rule_name=rule_name,
        actor=actor,
        now=now,
    )
    units = {u.id: u for u in (lead, *co_units)}
    tickets.record(
        session,
        ticket=ticket,
        action=action,
        actor=who(actor),
        now=now,
        changes=changes,
        reason=reason,
        rule=rule_name,
        data={**_assignment_summary(made, units, policy), **(extra or {})},
    )
    # Everything that can refuse the dispatch (units, policy, deadlines, the lifecycle) has
    # run by now; only then are the assignments written, so a refusal leaves no trace.
    session.add_all(made)
    session.flush()  # one flush for the assignments, the ticket and its event; callers need ids
    return made


# ---------------------------------------------------------------- dispatch


def facts_of(ticket: Ticket, tz: ZoneInfo = DEFAULT_TZ) -> TicketFacts:
    text = "\n".join(p for p in (ticket.title, ticket.description, ticket.request) if p)
    return TicketFacts(
        text=text,
        request_type=ticket.request_type,
        urgency=ticket.urgency,
        district=ticket.district,
        channel=ticket.channel,
        local_time=ticket.created_at.astimezone(tz).time(),
    )


def _classification(actions: Any, ticket: Ticket) -> dict[str, Any]:
    wanted = {
        "category_code": actions.category_code,
        "category_name": actions.category_name,
        "urgency": actions.urgency,
        "request_type": actions.request_type,
    }
    return {k: v for k, v in wanted.items() if v is not None and getattr(ticket, k) != v}


@dataclass
class _Decision:
    """What the rules (or the fallback) say about a ticket; no lead unit means the queue."""

    rule_name: str | None
    changes: dict[str, Any]
    explanation: dict[str, Any]
    lead: Unit | None = None
    co_units: list[Unit] = field(default_factory=list)
    policy: SlaPolicy | None = None
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _decide(
    session: Session, ticket: Ticket, *, fallback_unit_code: str | None, tz: ZoneInfo
) -> _Decision:
    """Every refusal (a rule naming an inactive unit, an unknown policy) is raised here,
    before anything is written or changed."""
    match, explanation = reference.snapshot(session).rules.decide(facts_of(ticket, tz))
    changes: dict[str, Any] = {}
    rule_name = None
    if match is not None:
        rule_name = match.rule.name
        changes = _classification(match.rule.actions, ticket)
        if match.rule.actions.lead_unit:
            return _Decision(
                rule_name,
                changes,
                explanation,
                lead=_unit(session, match.rule.actions.lead_unit),
                co_units=[_unit(session, c) for c in match.rule.actions.co_units or []],
                policy=policies.policy_for(
                    session,
                    request_type=changes.get("request_type", ticket.request_type),
                    urgency=changes.get("urgency", ticket.urgency),
                    category_code=changes.get("category_code", ticket.category_code),
                    name=match.rule.actions.sla_policy,
                ),
                extra={"explanation": explanation},
            )
    if fallback_unit_code:
        return _Decision(
            rule_name,
            changes,
            explanation,
            lead=_unit(session, fallback_unit_code),
            policy=policies.policy_for(
                session,
                request_type=ticket.request_type,
                urgency=changes.get("urgency", ticket.urgency),
                category_code=changes.get("category_code", ticket.category_code),
            ),
            reason="no rule routed the ticket: fallback unit",
            extra={"explanation": explanation, "fallback": True},
        )
    return _Decision(rule_name, changes, explanation)


_QUEUED = "no rule routed the ticket: manual dispatch queue"


def dispatch_ticket(
    session: Session,
    *,
    ticket_id: int,
    now: datetime,
    actor: Actor = None,
    fallback_unit_code: str | None = None,
    tz: ZoneInfo = DEFAULT_TZ,
    ticket: Ticket | None = None,
) -> DispatchResult:
    """派单 by rules. The first rule that fires sets category/urgency and names the units;
    when none routes the ticket it goes to the fallback unit, or else to the manual
    dispatch queue — never nowhere. A reopened ticket goes back to the units that had it.

    Every refusal is raised before the first write. `ticket` is for a caller that already
    holds the ticket's row lock. A ticket still being created is dispatched by
    `plan_new_dispatch` instead."""
    if ticket is None or ticket.id != ticket_id:
        ticket = _lock(session, ticket_id)
    if ticket.status == Status.reopened:
        return _redispatch_reopened(session, ticket=ticket, actor=actor, now=now)
    if ticket.status not in (Status.intake, Status.pending_dispatch):
        raise Conflict(
            f"ticket {ticket.number} is {ticket.status.value}; only new or queued "
            f"tickets are dispatched by rules",
            status=ticket.status.value,
        )

    decision = _decide(session, ticket, fallback_unit_code=fallback_unit_code, tz=tz)
    if decision.lead is not None:
        assert decision.policy is not None
        made = _route(
            session,
            ticket=ticket,
            action=Action.dispatch,
            lead=decision.lead,
            co_units=decision.co_units,
            policy=decision.policy,
            rule_name=decision.rule_name,
            actor=actor,
            now=now,
            changes=decision.changes,
            reason=decision.reason,
            extra=decision.extra,
        )
        return DispatchResult(ticket, made, decision.rule_name, explanation=decision.explanation)
    queued = DispatchResult(
        ticket, [], decision.rule_name, queued=True, explanation=decision.explanation
    )
    if ticket.status == Status.pending_dispatch:
        if decision.changes:
            tickets.record(
                session,
                ticket=ticket,
                action=Action.update,
                actor=who(actor),
                now=now,
                changes=decision.changes,
                rule=decision.rule_name,
                data={"explanation": decision.explanation},
            )
        return queued
    tickets.record(
        session,
        ticket=ticket,
        action=Action.queue,
        actor=who(actor),
        now=now,
        changes=decision.changes,
        rule=decision.rule_name,
        reason=_QUEUED,
        data={"explanation": decision.explanation},
    )
    return queued


_ASSIGNMENT_COLUMNS = tuple(c.key for c in Assignment.__table__.columns if c.key != "id")


def plan_new_dispatch(
    session: Session,
    *,
    ticket: Ticket,
    events: list[dict[str, Any]],
    now: datetime,
    actor: Actor = None,
    fallback_unit_code: str | None = None,
    tz: ZoneInfo = DEFAULT_TZ,
) -> tuple[DispatchResult, tickets.Companion | None]:
    """`dispatch_ticket` for a ticket that `tickets.create_ticket` still holds in memory
    (its `then`): decide, arm the clocks, apply the step to the ticket and append its
    event to `events`. The assignments come back as the ticket's Companion, written with
    it. A refusal raises before the ticket is touched."""
    decision = _decide(session, ticket, fallback_unit_code=fallback_unit_code, tz=tz)
    if decision.lead is None:
        events.append(
            tickets.apply(
                ticket,
                action=Action.queue,
                actor=who(actor),
                now=now,
                changes=decision.changes,
                rule=decision.rule_name,
                reason=_QUEUED,
                data={"explanation": decision.explanation},
            )
        )
        return DispatchResult(
            ticket, [], decision.rule_name, queued=True, explanation=decision.explanation
        ), None
    assert decision.policy is not None
    made = _new_assignments(
        session,
        ticket=ticket,
        lead=decision.lead,
        co_units=decision.co_units,
        policy=decision.policy,
        calendar=reference.snapshot(session).calendar,
        rule_name=decision.rule_name,
        actor=actor,
        now=now,
    )
    units = {u.id: u for u in (decision.lead, *decision.co_units)}
    events.append(
        tickets.apply(
            ticket,
            action=Action.dispatch,
            actor=who(actor),
            now=now,
            changes=decision.changes,
            reason=decision.reason,
            rule=decision.rule_name,
            data={**_assignment_summary(made, units, decision.policy), **decision.extra},
        )
    )

    def written(ticket_id: int, ids: list[int]) -> list[Assignment]:
        for assignment, ident in zip(made, ids, strict=True):
            assignment.ticket_id = ticket_id
            assignment.id = ident
        return made

    # built by _new_assignments, so every column is in the instance dict
    rows = [{k: a.__dict__[k] for k in _ASSIGNMENT_COLUMNS if k != "ticket_id"} for a in made]
    return (
        DispatchResult(ticket, made, decision.rule_name, explanation=decision.explanation),
        tickets.Companion(Assignment.__table__, rows, written),
    )


def manual_dispatch(
    session: Session,
    *,
    ticket_id: int,
    lead_unit_code: str,
    now: datetime,
    actor: Actor,
    co_unit_codes: Sequence[str] = (),
    policy_name: str | None = None,
    reason: str | None = None,
) -> DispatchResult:
    """派单 by hand, or 改派 (manual override) of a ticket already with a unit: the old
    assignments are withdrawn (kept in history) and the clocks restart."""
    ticket = _lock(session, ticket_id)
    lead = _unit(session, lead_unit_code)
    co = [_unit(session, c) for c in co_unit_codes]
    policy = policies.policy_for(
        session,
        request_type=ticket.request_type,
        urgency=ticket.urgency,
        category_code=ticket.category_code,
        name=policy_name,
    )
    if ticket.status in (Status.intake, Status.pending_dispatch, Status.reopened):
        action = Action.dispatch
    else:
        action = Action.redispatch
    # Check the lifecycle before touching assignments so a refused step changes nothing.
    next_status(ticket.status, action)
    withdrawn = (
        _withdraw(session, ticket_id=ticket.id, now=now) if action == Action.redispatch else []
    )
    made = _route(
        session,
        ticket=ticket,
        action=action,
        lead=lead,
        co_units=co,
        policy=policy,
        rule_name=None,
        actor=actor,
        now=now,
        reason=reason,
        extra={"manual": True, "withdrawn": [a.id for a in withdrawn]},
    )
    return DispatchResult(ticket, made)


def _redispatch_reopened(
    session: Session, *, ticket: Ticket, actor: Actor, now: datetime
) -> DispatchResult:
    history = [
        a
        for a in assignments_of(session, ticket_id=ticket.id)
        if a.status == AssignmentStatus.completed
    ]
    last_lead = next((a for a in reversed(history) if a.role == AssignmentRole.lead), None)
    if last_lead is None:
        raise Conflict(f"ticket {ticket.number} has no earlier lead unit to go back to")
    batch = [a for a in history if a.started_at == last_lead.started_at]
    lead = session.get(Unit, last_lead.unit_id)
    co = [session.get(Unit, a.unit_id) for a in batch if a.role == AssignmentRole.co]
    policy = session.get(SlaPolicy, last_lead.policy_id)
    made = _route(
        session,
        ticket=ticket,
        action=Action.dispatch,
        lead=lead,
        co_units=co,
        policy=policy,
        rule_name=last_lead.rule_name,
        actor=actor,
        now=now,
        reason="重办: back to the units that handled it",
    )
    return DispatchResult(ticket, made, last_lead.rule_name)


# ---------------------------------------------------------------- the unit's work


def sign(session: Session, *, assignment_id: int, actor: Actor, now: datetime) -> Assignment:
    """签收. The sign-for clock stops and the reply clock is watched from now on."""
    assignment = _assignment(session, assignment_id)
    _require_own_unit(actor, assignment)
    ticket = _lock(session, assignment.ticket_id)
    if assignment.status != AssignmentStatus.dispatched:
        raise Conflict(
            f"assignment {assignment.id} is {assignment.status.value}, not awaiting sign-for",
            status=assignment.status.value,
        )
    if assignment.role == AssignmentRole.lead:
        tickets.record(
            session,
            ticket=ticket,
            action=Action.sign,
            actor=who(actor),
            now=now,
            data={"assignment_id": assignment.id, "on_time": now <= assignment.sign_due_at},
        )
    else:
        tickets.add_note(
            session,
            ticket=ticket,
            actor=who(actor),
            now=now,
            kind="co_signed",
            data={"assignment_id": assignment.id, "on_time": now <= assignment.sign_due_at},
        )
    assignment.status = AssignmentStatus.signed
    assignment.signed_at = now
    policy = session.get(SlaPolicy, assignment.policy_id)
    escalation.arm(
        assignment, clock=Clock.reply, policy=policy, calendar=reference.snapshot(session).calendar
    )
    session.add(assignment)
    return assignment


def start(session: Session, *, assignment_id: int, actor: Actor, now: datetime) -> Assignment:
    """办理: the lead unit starts work (co-handling units just sign and reply)."""
    assignment = _assignment(session, assignment_id)
    _require_own_unit(actor, assignment)
    if assignment.role != AssignmentRole.lead:
        raise InvalidInput("co-handling units reply directly after signing for the ticket")
    if assignment.status != AssignmentStatus.signed:
        raise Conflict(
            f"assignment {assignment.id} is {assignment.status.value}; sign for it first",
            status=assignment.status.value,
        )
    ticket = _lock(session, assignment.ticket_id)
    tickets.record(
        session,
        ticket=ticket,
        action=Action.start,
        actor=who(actor),
        now=now,
        data={"assignment_id": assignment.id},
    )
    return assignment


def reply(
    session: Session, *, assignment_id: int, text: str, actor: Actor, now: datetime
) -> Assignment:
    """回复. The lead unit's reply goes to the centre for review; a co-handling unit's
    reply is its contribution, recorded on the ticket for the lead and the centre."""
    text = _required(text, "a reply needs text")
    assignment = _assignment(session, assignment_id)
    _require_own_unit(actor, assignment)
    if assignment.status != AssignmentStatus.signed:
        raise Conflict(
            f"assignment {assignment.id} is {assignment.status.value}; only a "
            f"signed assignment can reply",
            status=assignment.status.value,
        )
    ticket = _lock(session, assignment.ticket_id)
    on_time = now <= assignment.reply_due_at
    if assignment.role == AssignmentRole.lead:
        tickets.record(
            session,
            ticket=ticket,
            action=Action.reply,
            actor=who(actor),
            now=now,
            changes={"reply": text},
            data={"assignment_id": assignment.id, "on_time": on_time},
        )
    else:
        tickets.add_note(
            session,
            ticket=ticket,
            actor=who(actor),
            now=now,
            kind="co_reply",
            reason=text,
            data={"assignment_id": assignment.id, "on_time": on_time},
        )
    assignment.status = AssignmentStatus.replied
    assignment.replied_at = now
    assignment.reply = text
    escalation.disarm(assignment)
    session.add(assignment)
    return assignment


# ---------------------------------------------------------------- the centre's review


def review_reply(
    session: Session,
    *,
    ticket_id: int,
    approve: bool,
    actor: Actor,
    now: datetime,
    reason: str | None = None,
) -> Ticket:
    """审核: approve the lead unit's reply, or send it back for more work (the reply clock
    keeps running from where it was — a send-back buys no time)."""
    ticket = _lock(session, ticket_id)
    if approve:
        tickets.record(
            session,
            ticket=ticket,
            action=Action.approve_reply,
            actor=who(actor),
            now=now,
            reason=reason,
        )
        return ticket
    _required(reason, "sending a reply back needs a reason for the unit")
    tickets.record(
        session, ticket=ticket, action=Action.send_back, actor=who(actor), now=now, reason=reason
    )
    lead = _lead(session, ticket.id)
    if lead is not None:
        lead.status = AssignmentStatus.signed
        policy = session.get(SlaPolicy, lead.policy_id)
        escalation.arm(
            lead,
            clock=Clock.reply,
            policy=policy,
            calendar=reference.snapshot(session).calendar,
            level=_fired_levels(session, lead, Clock.reply),
        )
        session.add(lead)
    return ticket


def _fired_levels(session: Session, assignment: Assignment, clock: Clock) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Escalation)
            .where(
                Escalation.assignment_id == assignment.id,
                Escalation.clock == clock,
                Escalation.deadline == getattr(assignment, f"{clock.value}_due_at"),
            )
        )
        or 0
    )


def _finish(session: Session, *, ticket: Ticket, now: datetime) -> None:
    _withdraw(session, ticket_id=ticket.id, now=now, status=AssignmentStatus.completed)


def _close_out(session: Session, *, ticket: Ticket, actor: Actor, now: datetime) -> None:
    """A closed ticket's assignments are complete, and its merged tickets close with it."""
    _finish(session, ticket=ticket, now=now)
    tickets.close_merged_children(session, parent=ticket, actor=who(actor), now=now)


def callback(
    session: Session,
    *,
    ticket_id: int,
    satisfaction: Satisfaction,
    actor: Actor,
    now: datetime,
    comment: str | None = None,
) -> DispatchResult:
    """回访: satisfied or basically satisfied closes the ticket (and every ticket merged into
    it); dissatisfied reopens it (重办) and sends it straight back to the same units with
    fresh clocks."""
    ticket = _lock(session, ticket_id)
    satisfaction = Satisfaction(satisfaction)
    if satisfaction == Satisfaction.dissatisfied:
        tickets.record(
            session,
            ticket=ticket,
            action=Action.callback,
            actor=who(actor),
            now=now,
            target=Status.reopened,
            reason=comment,
            changes={"satisfaction": satisfaction, "reopen_count": ticket.reopen_count + 1},
        )
        _finish(session, ticket=ticket, now=now)
        return _redispatch_reopened(session, ticket=ticket, actor=actor, now=now)
    tickets.record(
        session,
        ticket=ticket,
        action=Action.callback,
        actor=who(actor),
        now=now,
        target=Status.closed,
        reason=comment,
        changes={"satisfaction": satisfaction},
    )
    _close_out(session, ticket=ticket, actor=actor, now=now)
    return DispatchResult(ticket)


def close(session: Session, *, ticket_id: int, actor: Actor, now: datetime, reason: str) -> Ticket:
    """办结 without a callback (the caller could not be reached, or was anonymous)."""
    _required(reason, "closing without a callback needs a reason")
    ticket = _lock(session, ticket_id)
    tickets.record(
        session, ticket=ticket, action=Action.close, actor=who(actor), now=now, reason=reason
    )
    _close_out(session, ticket=ticket, actor=actor, now=now)
    return ticket


def reopen(
    session: Session, *, ticket_id: int, actor: Actor, now: datetime, reason: str
) -> DispatchResult:
    """重办 of a closed ticket by the centre (a complaint about the outcome)."""
    _required(reason, "reopening needs a reason")
    ticket = _lock(session, ticket_id)
    tickets.record(
        session,
        ticket=ticket,
        action=Action.reopen,
        actor=who(actor),
        now=now,
        reason=reason,
        changes={"reopen_count": ticket.reopen_count + 1},
    )
    return _redispatch_reopened(session, ticket=ticket, actor=actor, now=now)


def archive(session: Session, *, ticket_id: int, actor: Actor, now: datetime) -> Ticket:
    ticket = _lock(session, ticket_id)
    tickets.record(session, ticket=ticket, action=Action.archive, actor=who(actor), now=now)
    return ticket


# ---------------------------------------------------------------- 退单 return


def return_ticket(
    session: Session,
    *,
    assignment_id: int,
    reason_code: str,
    reason: str,
    actor: Actor,
    now: datetime,
) -> Assignment:
    """退单: the lead unit says the ticket is not theirs; the centre reviews it. A
    co-handling unit that is not concerned is simply released."""
    if reason_code not in RETURN_REASONS:
        raise InvalidInput(
            f"reason_code must be one of {sorted(RETURN_REASONS)}", reason_code=reason_code
        )
    _required(reason, "a return needs a reason the centre can review")
    assignment = _assignment(session, assignment_id)
    _require_own_unit(actor, assignment)
    if assignment.status not in (AssignmentStatus.dispatched, AssignmentStatus.signed):
        raise Conflict(
            f"assignment {assignment.id} is {assignment.status.value}; it can no "
            f"longer be returned",
            status=assignment.status.value,
        )
    ticket = _lock(session, assignment.ticket_id)
    data = {
        "assignment_id": assignment.id,
        "reason_code": reason_code,
        "reason_label": RETURN_REASONS[reason_code],
    }
    if assignment.role == AssignmentRole.lead:
        tickets.record(
            session,
            ticket=ticket,
            action=Action.return_,
            actor=who(actor),
            now=now,
            reason=reason,
            changes={"return_count": ticket.return_count + 1},
            data=data,
        )
        assignment.status = AssignmentStatus.returned
    else:
        tickets.add_note(
            session,
            ticket=ticket,
            actor=who(actor),
            now=now,
            kind="co_released",
            reason=reason,
            data=data,
        )
        assignment.status = AssignmentStatus.withdrawn
        assignment.ended_at = now
    assignment.return_reason_code = reason_code
    assignment.return_reason = reason
    escalation.disarm(assignment)
    session.add(assignment)
    return assignment


def review_return(
    session: Session,
    *,
    ticket_id: int,
    uphold: bool,
    actor: Actor,
    now: datetime,
    reason: str | None = None,
    lead_unit_code: str | None = None,
    co_unit_codes: Sequence[str] = (),
    policy_name: str | None = None,
) -> DispatchResult:
    """The centre's review of a 退单: uphold the original dispatch (the unit keeps the
    ticket, its clocks as they were) or 改派 re-dispatch to another unit (fresh clocks)."""
    ticket = _lock(session, ticket_id)
    if ticket.status != Status.returned:
        raise Conflict(
            f"ticket {ticket.number} has no return awaiting review", status=ticket.status.value
        )
    returned = session.scalars(
        select(Assignment)
        .where(Assignment.ticket_id == ticket.id, Assignment.status == AssignmentStatus.returned)
        .order_by(col(Assignment.id).desc())
    ).first()
    if returned is None:
        raise Conflict(f"ticket {ticket.number} has no returned assignment")
    if uphold:
        _required(reason, "upholding a dispatch needs a reason for the unit")
        back_to = Status.signed if returned.signed_at else Status.dispatched
        if back_to == Status.signed and _was_in_progress(session, ticket.id):
            back_to = Status.in_progress
        tickets.record(
            session,
            ticket=ticket,
            action=Action.uphold_return,
            actor=who(actor),
            now=now,
            target=back_to,
            reason=reason,
            data={"assignment_id": returned.id},
        )
        returned.status = (
            AssignmentStatus.signed if returned.signed_at else AssignmentStatus.dispatched
        )
        clock = Clock.reply if returned.signed_at else Clock.sign
        escalation.arm(
            returned,
            clock=clock,
            policy=session.get(SlaPolicy, returned.policy_id),
            calendar=reference.snapshot(session).calendar,
            level=_fired_levels(session, returned, clock),
        )
        session.add(returned)
        return DispatchResult(ticket, [returned])
    if not lead_unit_code:
        raise InvalidInput("re-dispatching a returned ticket needs the new lead unit")
    if lead_unit_code == session.get(Unit, returned.unit_id).code:
        raise InvalidInput("re-dispatch to the unit that returned it: uphold the dispatch instead")
    return manual_dispatch(
        session,
        ticket_id=ticket.id,
        lead_unit_code=lead_unit_code,
        co_unit_codes=co_unit_codes,
        policy_name=policy_name,
        reason=reason or "改派 after return review",
        actor=actor,
        now=now,
    )


def _was_in_progress(session: Session, ticket_id: int) -> bool:
    last_return = next(
        (
            e
            for e in reversed(tickets.events_of(session, ticket_id))
            if e.action == Action.return_.value
        ),
        None,
    )
    return last_return is not None and last_return.from_status == Status.in_progress


# ---------------------------------------------------------------- 延期 extension


def request_extension(
    session: Session,
    *,
    assignment_id: int,
    extend_by: float,
    extend_unit: ClockUnit,
    reason: str,
    actor: Actor,
    now: datetime,
) -> ExtensionRequest:
    """延期 must be asked before the reply deadline; one open request at a time."""
    if extend_by <= 0:
        raise InvalidInput("extend_by must be positive")
    _required(reason, "an extension request needs a reason")
    assignment = _assignment(session, assignment_id)
    _require_own_unit(actor, assignment)
    if assignment.status not in (AssignmentStatus.dispatched, AssignmentStatus.signed):
        raise Conflict(
            f"assignment {assignment.id} is {assignment.status.value}; nothing to extend",
            status=assignment.status.value,
        )
    if now >= assignment.reply_due_at:
        raise Conflict(
            "an extension must be asked before the deadline; this one passed at "
            f"{assignment.reply_due_at.isoformat()}",
            deadline=assignment.reply_due_at.isoformat(),
        )
    pending = session.scalars(
        select(ExtensionRequest).where(
            ExtensionRequest.assignment_id == assignment.id,
            ExtensionRequest.status == ExtensionStatus.pending,
        )
    ).first()
    if pending is not None:
        raise Conflict(
            f"extension request {pending.id} is still awaiting a decision", extension_id=pending.id
        )
    ticket = _lock(session, assignment.ticket_id)
    request = ExtensionRequest(
        ticket_id=ticket.id,
        assignment_id=assignment.id,
        requested_by=who(actor),
        requested_at=now,
        extend_by=extend_by,
        extend_unit=ClockUnit(extend_unit),
        reason=reason,
        old_due_at=assignment.reply_due_at,
    )
    session.add(request)
    session.flush()
    tickets.add_note(
        session,
        ticket=ticket,
        actor=who(actor),
        now=now,
        kind="extension_requested",
        reason=reason,
        data={
            "extension_id": request.id,
            "assignment_id": assignment.id,
            "extend_by": extend_by,
            "extend_unit": ClockUnit(extend_unit).value,
        },
    )
    return request


def decide_extension(
    session: Session,
    *,
    extension_id: int,
    approve: bool,
    actor: Actor,
    now: datetime,
    reason: str | None = None,
) -> ExtensionRequest:
    """An approved extension moves the reply and close deadlines (and the warnings with
    them); the old and new deadlines are both in the audit."""
    request = session.get(ExtensionRequest, extension_id)
    if request is None:
        raise NotFound(f"extension request {extension_id} does not exist")
    if request.status != ExtensionStatus.pending:
        raise Conflict(
            f"extension request {extension_id} was already {request.status.value}",
            status=request.status.value,
        )
    ticket = _lock(session, request.ticket_id)
    assignment = session.get(Assignment, request.assignment_id)
    request.decided_by = who(actor)
    request.decided_at = now
    request.decision_reason = reason
    data: dict[str, Any] = {"extension_id": request.id, "assignment_id": assignment.id}
    if approve:
        if assignment.status not in (AssignmentStatus.dispatched, AssignmentStatus.signed):
            raise Conflict(
                f"assignment {assignment.id} is {assignment.status.value}; the "
                f"extension no longer applies"
            )
        calendar = reference.snapshot(session).calendar
        new_due = sla.add_time(
            assignment.reply_due_at, request.extend_by, request.extend_unit, calendar
        )
        assignment.close_due_at = sla.add_time(
            assignment.close_due_at, request.extend_by, request.extend_unit, calendar
        )
        assignment.reply_due_at = new_due
        assignment.extension_count += 1
        request.status = ExtensionStatus.approved
        request.new_due_at = new_due
        if assignment.escalation_clock == Clock.reply:
            escalation.arm(
                assignment,
                clock=Clock.reply,
                policy=session.get(SlaPolicy, assignment.policy_id),
                calendar=calendar,
            )
        session.add(assignment)
        data |= {"old_due_at": request.old_due_at.isoformat(), "new_due_at": new_due.isoformat()}
        kind = "extension_approved"
    else:
        request.status = ExtensionStatus.refused
        kind = "extension_refused"
    session.add(request)
    tickets.add_note(
        session, ticket=ticket, actor=who(actor), now=now, kind=kind, reason=reason, data=data
    )
    return request


def extensions(
    session: Session,
    *,
    ticket_id: int | None = None,
    status: ExtensionStatus | None = None,
    limit: int = 200,
) -> list[ExtensionRequest]:
    """Extension requests of one ticket, or the centre's queue (e.g. every pending one),
    oldest first."""
    stmt = select(ExtensionRequest)
    if ticket_id is not None:
        stmt = stmt.where(ExtensionRequest.ticket_id == ticket_id)
    if status is not None:
        stmt = stmt.where(ExtensionRequest.status == status)
    return list(session.scalars(stmt.order_by(ExtensionRequest.id).limit(limit)))


# ---------------------------------------------------------------- 并单 merge


def merge(
    session: Session,
    *,
    ticket_id: int,
    parent_id: int,
    actor: Actor,
    now: datetime,
    reason: str | None = None,
) -> Ticket:
    """并单: the duplicate's own assignments end; the parent's reply will reach its caller."""
    child = _lock(session, ticket_id)
    parent = _lock(session, parent_id)
    tickets.merge(session, child=child, parent=parent, actor=who(actor), now=now, reason=reason)
    _withdraw(session, ticket_id=child.id, now=now)
    return child
