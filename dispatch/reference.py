"""The reference data every dispatch reads — compiled rules, units, SLA policies and the
working-day calendar — held per process as one snapshot. Every writer of those tables bumps
one revision counter, so a dispatch costs one SELECT of the revision instead of reading
the rules, the units, the policies and the calendar each time, and a change made by any
process is seen by the next dispatch anywhere."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from core.errors import InvalidInput
from dispatch.calendar import WorkCalendar
from dispatch.models import CalendarDay, Rule, RuleRevision, SlaPolicy, Unit
from dispatch.rule_matching import CompiledRules
from dispatch.rule_specs import RuleSpec, validate_rule
from dispatch.segment import default_synonyms

log = logging.getLogger(__name__)

_CHANGED = "dispatch.reference.changed"
_SEEN = "dispatch.reference.seen"


@dataclass(frozen=True)
class Snapshot:
    revision: int
    rules: CompiledRules
    units: Mapping[str, Unit]  # by code; detached copies, never to be added to a session
    units_by_id: Mapping[int, Unit]  # the same copies by id
    policies: tuple[SlaPolicy, ...]  # detached copies, inactive ones included
    calendar: WorkCalendar


_Cache = MutableMapping[Any, Snapshot]
_by_database: dict[str, Snapshot] = {}
_by_connection: weakref.WeakKeyDictionary[Connection, Snapshot] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def bump(session: Session) -> None:
    """Call after changing rules, units, SLA policies or calendar days."""
    # One atomic UPDATE, so two writers never produce the same revision number.
    bumped = session.exec(
        update(RuleRevision)
        .where(col(RuleRevision.id) == 1)
        .values(revision=RuleRevision.revision + 1)
    )
    if bumped.rowcount == 0:
        session.add(RuleRevision(id=1, revision=1))
        session.flush()
    session.info[_CHANGED] = True


_REVISION = select(RuleRevision.revision).where(RuleRevision.id == 1)


def _revision(session: Session) -> int:
    # Core, not the ORM: this runs once per transaction, on every intake.
    return session.connection().execute(_REVISION).scalar() or 0


def _detached(row: Any) -> Any:
    return type(row).model_validate(row.model_dump())


def rule_spec(rule: Rule) -> RuleSpec:
    return validate_rule(
        {
            "name": rule.name,
            "priority": rule.priority,
            "enabled": rule.enabled,
            "description": rule.description,
            "conditions": rule.conditions,
            "actions": rule.actions,
        }
    )


def _compile(session: Session) -> CompiledRules:
    specs = []
    for rule in session.exec(select(Rule).where(col(Rule.enabled).is_(True))).all():
        try:
            specs.append(rule_spec(rule))
        except InvalidInput as exc:
            # Only a row written around the rule book can be invalid; one bad rule must not
            # stop every ticket from being dispatched.
            log.error("skipping invalid stored rule %s: %s", rule.id, exc.message)
    return CompiledRules.build(specs, default_synonyms())


def _build(session: Session, revision: int) -> Snapshot:
    days = session.exec(select(CalendarDay)).all()
    units = [_detached(u) for u in session.exec(select(Unit)).all()]
    return Snapshot(
        revision=revision,
        rules=_compile(session),
        units={u.code: u for u in units},
        units_by_id={u.id: u for u in units},
        policies=tuple(_detached(p) for p in session.exec(select(SlaPolicy)).all()),
        calendar=WorkCalendar(
            {d.day: d.is_workday for d in days}, names={d.day: d.name for d in days if d.name}
        ),
    )


def snapshot(session: Session) -> Snapshot:
    """The reference data as this transaction sees it: one revision check per transaction,
    so a dispatch works from one consistent view."""
    if session.info.get(_CHANGED):
        # This transaction changed reference data others cannot see yet: read it fresh.
        return _build(session, -1)
    transaction = session.get_transaction()
    seen = session.info.get(_SEEN)
    if seen is not None and transaction is not None and seen[0] is transaction:
        cached: Snapshot = seen[1]  # session.info holds anything
        return cached
    current = _current(session)
    # the read itself may have begun the transaction
    session.info[_SEEN] = (session.get_transaction(), current)
    return current


def read_along(session: Session, revision: int | None) -> None:
    """Take the revision that another of this transaction's statements read along with its
    own data (see REVISION) — authentication does — so `snapshot` need not ask again."""
    if session.info.get(_CHANGED):
        return
    session.info[_SEEN] = (session.get_transaction(), _current(session, revision or 0))


REVISION = _REVISION.scalar_subquery().label("reference_revision")
"""A column for another SELECT to carry the revision along (see `read_along`)."""


def _current(session: Session, revision: int | None = None) -> Snapshot:
    # Read the revision before the data: an entry may then hold data newer than its key,
    # never older.
    if revision is None:
        revision = _revision(session)
    cache, key = _cache_slot(session)
    with _lock:
        cached = cache.get(key)
    if cached is not None and cached.revision == revision:
        return cached
    fresh = _build(session, revision)
    with _lock:
        cache[key] = fresh
    return fresh


def _cache_slot(session: Session) -> tuple[_Cache, Any]:
    bind = session.get_bind()
    if isinstance(bind, Connection):
        # Joined to an outer transaction that its owner may roll back (tests do): the
        # revisions seen here can recur later with other data, so cache per connection.
        return _by_connection, bind
    return _by_database, bind.url.render_as_string(hide_password=True)
