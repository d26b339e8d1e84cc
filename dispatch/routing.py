"""Dispatching (派单): routing a ticket to its lead and co-handling units by the rules, by
hand, or back to the units that had it when it reopens; 改派 re-dispatch. Every dispatch
creates the assignments with their deadlines and arms the sign-for clock, keeps the old
assignments in history, and writes the ticket's audit event.

Every refusal (an inactive unit, an unknown policy, a step the lifecycle forbids) is raised
before the first write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlmodel import Session

from core.db import build_row, saved_id, table_of
from core.errors import Conflict, InvalidInput
from dispatch import advice, classifier, escalation, policies, reference, sla
from dispatch.assignments import Actor, assignments_of, lock_ticket, who, withdraw
from dispatch.calendar import WorkCalendar
from dispatch.models import (
    Assignment,
    AssignmentRole,
    AssignmentStatus,
    Clock,
    SlaPolicy,
    Unit,
)
from dispatch.rows import existing
from dispatch.rule_matching import TicketFacts
from dispatch.rule_specs import Actions
from tickets import service as tickets
from tickets.intake import Companion
from tickets.lifecycle import Action, next_status
from tickets.models import Status, Ticket

DEFAULT_TZ = ZoneInfo("Asia/Shanghai")


@dataclass
class DispatchResult:
    ticket: Ticket
    assignments: list[Assignment] = field(default_factory=list)
    rule: str | None = None
    queued: bool = False
    explanation: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- creating assignments


def _unit(session: Session, code: str) -> Unit:
    unit = reference.snapshot(session).units.get(code)
    if unit is None or not unit.active:
        raise InvalidInput(f"unit {code!r} does not exist or is inactive", unit=code)
    return unit


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
    units = {saved_id(u): u for u in (lead, *co_units)}
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


# ---------------------------------------------------------------- dispatching


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


def _classification(actions: Actions, ticket: Ticket) -> dict[str, Any]:
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
    facts = facts_of(ticket, tz)
    match, explained = reference.snapshot(session).rules.decide(facts)
    # The Explanation as the plain JSON mapping the audit event and the API carry.
    explanation = cast(dict[str, Any], explained)
    model = classifier.installed()
    suggestion = model.suggest(facts.text) if model is not None else None
    if suggestion is not None and explained["confidence"] != 1.0:
        # Advice for the dispatcher where the rules were silent or unsure.
        explanation["suggestion"] = suggestion.to_data()
    gate = advice.advise(match, explained, suggestion, model.support if model else None)
    if match is not None or suggestion is not None:
        explanation["advice"] = gate.to_data()
    if (
        match is not None
        and match.rule.actions.lead_unit
        and gate.source not in advice.AUTO_SOURCES
    ):
        # The confidence gate (dispatch/advice.py): a rule the suggestion contradicts, or one
        # that fired on setting words alone while another unit was in play, does not route;
        # a proposal of the suggestion alone waits for the dispatcher to confirm it.
        match = None
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
        ticket = lock_ticket(session, ticket_id)
    if ticket.status == Status.reopened:
        return redispatch_reopened(session, ticket=ticket, actor=actor, now=now)
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


_ASSIGNMENT_TABLE = table_of(Assignment)
_ASSIGNMENT_COLUMNS = tuple(c.key for c in _ASSIGNMENT_TABLE.columns if c.key != "id")


def plan_new_dispatch(
    session: Session,
    *,
    ticket: Ticket,
    events: list[dict[str, Any]],
    now: datetime,
    actor: Actor = None,
    fallback_unit_code: str | None = None,
    tz: ZoneInfo = DEFAULT_TZ,
) -> tuple[DispatchResult, Companion | None]:
    """`dispatch_ticket` for a ticket that `tickets.intake.create_ticket` still holds in memory
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
    units = {saved_id(u): u for u in (decision.lead, *decision.co_units)}
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
        Companion(_ASSIGNMENT_TABLE, rows, written),
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
    ticket = lock_ticket(session, ticket_id)
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
        withdraw(session, ticket_id=saved_id(ticket), now=now)
        if action == Action.redispatch
        else []
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


def redispatch_reopened(
    session: Session, *, ticket: Ticket, actor: Actor, now: datetime
) -> DispatchResult:
    """重办: a reopened ticket goes back to the units that last handled it, fresh clocks."""
    history = [
        a
        for a in assignments_of(session, ticket_id=saved_id(ticket))
        if a.status == AssignmentStatus.completed
    ]
    last_lead = next((a for a in reversed(history) if a.role == AssignmentRole.lead), None)
    if last_lead is None:
        raise Conflict(f"ticket {ticket.number} has no earlier lead unit to go back to")
    batch = [a for a in history if a.started_at == last_lead.started_at]
    lead = existing(session, Unit, last_lead.unit_id)
    co = [existing(session, Unit, a.unit_id) for a in batch if a.role == AssignmentRole.co]
    policy = existing(session, SlaPolicy, last_lead.policy_id)
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
