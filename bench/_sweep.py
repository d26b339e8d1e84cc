"""bench/pipeline.py's SLA sweep: `dispatch.escalation.sweep` timed with few and with many
open assignments, bulk-loaded with values computed by `escalation.arm` itself."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlmodel import Session, col

from bench import _common as common
from bench._pipeline_plan import NOW, Plan, bench_settings
from core.db import session_scope
from dispatch import escalation, policies, sla
from dispatch.models import Assignment, AssignmentRole, Clock, SlaPolicy, Unit
from hotline.seed import seed_demo

_TICKET_INSERT = (
    "INSERT INTO ticket (number, channel, status, confidential, district, title, description, "
    "request_type, urgency, category_code, category_name, return_count, reopen_count, "
    "created_at, updated_at, created_by, event_seq) "
    "SELECT :prefix || g, 'phone', 'dispatched', false, '榆阳区', '路灯不亮', "
    "'沿河那段路的路灯不亮已经一个多星期了，晚上走路很不安全，希望尽快修复。', 'complaint', "
    "'normal', '020301', '路灯', 0, 0, :created, :created, 'bench', 0 "
    "FROM generate_series(1, :n) AS g"
)
_ASSIGNMENT_INSERT = (
    "INSERT INTO assignment (ticket_id, unit_id, role, status, policy_id, rule_name, "
    "dispatched_by, started_at, sign_due_at, reply_due_at, close_due_at, extension_count, "
    "escalation_clock, escalation_level, next_escalation_at) "
    "SELECT t.id, :unit_id, 'lead', 'dispatched', :policy_id, '路灯', 'system', :started, "
    ":sign_due, :reply_due, :close_due, 0, 'sign', 0, "
    "CAST(:next_at AS timestamptz) + (t.id % :spread) * interval '1 second' "
    "FROM ticket t WHERE t.id > :after"
)


@dataclass(frozen=True)
class Armed:
    """Column values of assignments armed by dispatch.escalation.arm itself."""

    started: datetime
    sign_due: datetime
    reply_due: datetime
    close_due: datetime
    next_at: datetime
    steps_due: int  # how many steps of its chain are due at NOW


def armed(session: Session, *, policy: SlaPolicy, unit: Unit, started: datetime) -> Armed:
    assert unit.id is not None and policy.id is not None  # rows read from the database
    calendar = policies.load_calendar(session)
    due = {f"{c.value}_due_at": sla.due_at(started, policy, c, calendar) for c in Clock}
    assignment = Assignment(
        ticket_id=0,
        unit_id=unit.id,
        role=AssignmentRole.lead,
        policy_id=policy.id,
        dispatched_by="system",
        started_at=started,
        sign_due_at=due["sign_due_at"],
        reply_due_at=due["reply_due_at"],
        close_due_at=due["close_due_at"],
    )
    escalation.arm(assignment, clock=Clock.sign, policy=policy, calendar=calendar)
    schedule = escalation.schedule_for(
        assignment, clock=Clock.sign, policy=policy, calendar=calendar
    )
    assert assignment.next_escalation_at is not None  # arm() set the first step
    return Armed(
        started,
        due["sign_due_at"],
        due["reply_due_at"],
        due["close_due_at"],
        assignment.next_escalation_at,
        sum(step.at <= NOW for step in schedule),
    )


def _bulk_assignments(
    session: Session,
    *,
    prefix: str,
    n: int,
    template: Armed,
    unit: Unit,
    policy: SlaPolicy,
    spread_s: int,
) -> None:
    after = session.scalar(text("SELECT coalesce(max(id), 0) FROM ticket"))
    session.execute(text(_TICKET_INSERT), {"prefix": prefix, "n": n, "created": template.started})
    session.execute(
        text(_ASSIGNMENT_INSERT),
        {
            "unit_id": unit.id,
            "policy_id": policy.id,
            "started": template.started,
            "sign_due": template.sign_due,
            "reply_due": template.reply_due,
            "close_due": template.close_due,
            "next_at": template.next_at,
            "spread": spread_s,
            "after": after,
        },
    )


def sweep_scaling(url: str, plan: Plan) -> dict[str, Any]:
    """Sweep time with the small and the large number of open assignments, the same number
    due each time; fresh due assignments before every timed sweep."""
    engine, factory = common.session_factory(url)
    settings = bench_settings()
    with session_scope(factory) as session:
        seed_demo(session=session, now=NOW)
        policy = session.scalars(select(SlaPolicy).where(col(SlaPolicy.name) == "general")).one()
        unit = session.scalars(select(Unit).where(col(Unit.code) == "URBAN_MGMT")).one()
        # Due: started 20 h ago on a 24 h sign clock, so the warning (at 75 %) is due and
        # the chase (at the deadline) is not. Background: started now, nothing due for
        # hours, next steps spread over the coming month.
        due_template = armed(session, policy=policy, unit=unit, started=NOW - timedelta(hours=20))
        open_template = armed(session, policy=policy, unit=unit, started=NOW)
    assert due_template.next_at <= NOW and due_template.steps_due >= 1
    assert open_template.next_at > NOW

    result: dict[str, Any] = {"due_per_sweep": plan.sweep_due, "batch": 500, "sizes": {}}
    loaded = 0
    try:
        for size in plan.sweep_sizes:
            common.say(f"  sweep: loading open assignments up to {size:,}")
            start = time.perf_counter()
            with session_scope(factory) as session:
                _bulk_assignments(
                    session,
                    prefix=f"BG{size}-",
                    n=size - loaded,
                    template=open_template,
                    unit=unit,
                    policy=policy,
                    spread_s=30 * 24 * 3600,
                )
            loaded = size
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE ticket"))
                conn.execute(text("VACUUM ANALYZE assignment"))
            load_s = time.perf_counter() - start
            times, query_ms, fired = [], [], []
            for rep in range(plan.sweep_reps):
                with session_scope(factory) as session:
                    _bulk_assignments(
                        session,
                        prefix=f"DUE{size}-{rep}-",
                        n=plan.sweep_due,
                        template=due_template,
                        unit=unit,
                        policy=policy,
                        spread_s=1,
                    )
                query_ms.append(_due_query_ms(factory))
                if rep == 0:
                    plan_text = _due_query_plan(engine)
                seconds, outcome = common.timed(
                    lambda: escalation.sweep(factory, now=NOW, batch=500, settings=settings)
                )
                if outcome.fired != plan.sweep_due * due_template.steps_due or outcome.failed:
                    raise RuntimeError(
                        f"sweep fired {outcome.fired} steps ({outcome.failed} "
                        f"failed); expected {plan.sweep_due * due_template.steps_due}"
                    )
                times.append(seconds)
                fired.append(outcome.fired)
            with session_scope(factory) as session:
                open_count = session.scalar(
                    text("SELECT count(*) FROM assignment WHERE next_escalation_at IS NOT NULL")
                )
            result["sizes"][str(size)] = {
                "open_assignments": open_count,
                "load_s": round(load_s, 1),
                "sweep_s": [round(t, 3) for t in times],
                "sweep_s_median": round(statistics.median(times), 3),
                "due_query_ms_median": round(statistics.median(query_ms), 3),
                "due_query_plan": plan_text,
                "fired_per_sweep": fired[0],
            }
            common.say(f"  sweep with {open_count:,} open: {statistics.median(times):.3f} s")
    finally:
        engine.dispose()
    small, large = (result["sizes"][str(s)] for s in plan.sweep_sizes)
    result["sweep_ratio"] = round(large["sweep_s_median"] / small["sweep_s_median"], 3)
    return result


def _due_query_ms(factory: Callable[[], Session]) -> float:
    samples = []
    with session_scope(factory) as session:
        for _ in range(5):
            t0 = time.perf_counter()
            session.execute(escalation.due_assignments(now=NOW, batch=500, after=None)).all()
            samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def _due_query_plan(engine: Any) -> str:
    compiled = escalation.due_assignments(now=NOW, batch=500, after=None).compile(
        dialect=engine.dialect
    )
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN {compiled}", compiled.params).scalars().all()
    return " | ".join(line.strip() for line in plan)
