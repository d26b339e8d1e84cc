"""Operators at their seats: the agent states and every move between them.

    signed_out --sign_in--> not_ready --set_ready--> ready --reserve--> ringing
    ringing --answered--> on_call --call_ended--> wrap_up --(wrap_up_s, or set_ready)--> ready
    ringing --missed--> not_ready (missed)        ringing --release--> ready (caller gone)
    ready | not_ready | wrap_up --set_not_ready(reason)--> not_ready
    ready | not_ready | wrap_up --sign_out--> signed_out  (a supervisor may force it from any)

The console moves an operator (sign in at a seat, ready, not ready with a reason, sign out);
the queue (ACD, telephony.acd) moves them through a call. Those run in different processes
— the web's and the SIP edge's — so every move is a compare-and-set on the row's ``version``:
``UPDATE … WHERE user_id = :id AND version = :seen``. Whoever loses the race reads again and
finds the move illegal, or (``reserve``) tries the next agent; on PostgreSQL the loser's
UPDATE waits for the winner's commit and then matches nothing, on SQLite the writers queue
(BEGIN IMMEDIATE). No operator is ever rung for two calls.

Every move writes an ``AgentStateChange`` (the figures' basis) and, after the commit, rings
the bell's ``agents`` topic, so that the queue offers a waiting call to an operator the moment
they become ready. Functions take an explicit session and never commit; the queue's moves
(``reserve``, ``answered``, ``missed``, ``call_ended``) return None rather than raise when the
operator is no longer where the queue thought (a supervisor signed them out meanwhile): the
queue then treats the offer as gone.

Over 600 lines because the moves are one discipline — read, check the move is legal,
compare-and-set, store the change, ring after commit — and the console's and the queue's
moves meet on the same rows: kept together, a change to one is seen beside the other."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import RowMapping, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from accounts.models import (
    AgentState,
    AgentStateChange,
    AgentStatus,
    NotReadyReason,
    Role,
    User,
)
from core.bell import Bell
from core.db import after_commit, table_of
from core.errors import Conflict, IllegalTransition, InvalidInput, NotFound
from telephony.models import CallRecord

TOPIC = "agents"
EXTENSION = re.compile(r"^[0-9]{2,16}$")
SKILL = re.compile(r"^[a-z0-9_-]{1,32}$")
DEFAULT_WRAP_UP_S = 15.0  # core.settings.AcdSettings.wrap_up_s: callers pass the setting
SOURCES = frozenset({"console", "acd", "reconciler", "admin"})
# Roles that take calls at a seat: the centre's own staff (a supervisor may sit in too).
SEATED_ROLES = frozenset({Role.operator, Role.dispatcher, Role.supervisor, Role.admin})
CAS_ATTEMPTS = 5

_status = table_of(AgentStatus)
_changes = table_of(AgentStateChange)

SIGNED_IN = (
    AgentState.ready,
    AgentState.not_ready,
    AgentState.ringing,
    AgentState.on_call,
    AgentState.wrap_up,
)
# The console's moves and the states they may start from.
_SET_READY_FROM = frozenset({AgentState.not_ready, AgentState.wrap_up})
_SET_NOT_READY_FROM = frozenset({AgentState.ready, AgentState.not_ready, AgentState.wrap_up})
_SIGN_OUT_FROM = frozenset({AgentState.ready, AgentState.not_ready, AgentState.wrap_up})


@dataclass(frozen=True)
class Agent:
    """An operator's state as stored (``version`` included: the next compare-and-set's)."""

    user_id: int
    state: AgentState
    reason: NotReadyReason | None
    extension: str | None
    skills: frozenset[str]
    since: datetime
    idle_since: datetime | None
    wrap_up_until: datetime | None
    call_key: str | None
    version: int

    @property
    def signed_in(self) -> bool:
        return self.state != AgentState.signed_out

    @classmethod
    def of(cls, row: Mapping[str, Any] | RowMapping) -> Agent:
        return cls(
            user_id=row["user_id"],
            state=AgentState(row["state"]),
            reason=NotReadyReason(row["reason"]) if row["reason"] is not None else None,
            extension=row["extension"],
            skills=parse_skills(row["skills"]),
            since=row["since"],
            idle_since=row["idle_since"],
            wrap_up_until=row["wrap_up_until"],
            call_key=row["call_key"],
            version=row["version"],
        )


def signed_out(user_id: int, now: datetime) -> Agent:
    """The state of an operator who never signed in at a seat (no row yet)."""
    return Agent(user_id, AgentState.signed_out, None, None, frozenset(), now, None, None, None, -1)


# ---------------------------------------------------------------- input


def parse_skills(raw: str | Iterable[str] | None) -> frozenset[str]:
    """Skills as a set: from the stored comma list, or from what someone typed (``"EN, urgent"``
    → {"en", "urgent"}); a skill is 1–32 of a-z, 0-9, _ and -."""
    if raw is None:
        return frozenset()
    parts = raw.split(",") if isinstance(raw, str) else list(raw)
    skills = frozenset(p.strip().lower() for p in parts if p.strip())
    bad = sorted(s for s in skills if not SKILL.match(s))
    if bad:
        raise InvalidInput(
            f"a skill is 1-32 letters, digits, '_' or '-': {bad[0]!r}", field="skills"
        )
    if len(",".join(sorted(skills))) > 500:
        raise InvalidInput("too many skills (500 characters in all)", field="skills")
    return skills


def check_extension(extension: str) -> str:
    extension = (extension or "").strip()
    if not EXTENSION.match(extension):
        raise InvalidInput("a seat is its extension: 2 to 16 digits", field="extension")
    return extension


# ---------------------------------------------------------------- reading


def _read(session: Session, user_id: int) -> Agent | None:
    row = session.execute(select(_status).where(_status.c.user_id == user_id)).mappings().first()
    return Agent.of(row) if row is not None else None


def status(session: Session, user_id: int, now: datetime) -> Agent:
    """The operator's state (signed out when they never signed in)."""
    return _read(session, user_id) or signed_out(user_id, now)


def list_agents(session: Session, *, signed_in_only: bool = True) -> list[Agent]:
    """Operators by state (those who are signed in, unless asked for all), then seat."""
    stmt = select(_status).order_by(_status.c.state, _status.c.extension, _status.c.user_id)
    if signed_in_only:
        stmt = stmt.where(_status.c.state != AgentState.signed_out)
    return [Agent.of(row) for row in session.execute(stmt).mappings()]


def ready_count(session: Session, skills: Iterable[str] = ()) -> int:
    """Operators ready to be rung now (with every one of ``skills``)."""
    wanted = parse_skills(skills)
    if not wanted:
        return int(
            session.scalar(
                select(func.count())
                .select_from(_status)
                .where(_status.c.state == AgentState.ready, _status.c.extension.is_not(None))
            )
            or 0
        )
    rows = session.execute(
        select(_status.c.skills).where(
            _status.c.state == AgentState.ready, _status.c.extension.is_not(None)
        )
    )
    return sum(1 for (skills,) in rows if wanted <= parse_skills(skills))


def signed_in_count(session: Session, skills: Iterable[str] = ()) -> int:
    """Operators signed in at a seat, whatever they are doing (with every one of ``skills``):
    none means nobody will come, and the queue overflows."""
    wanted = parse_skills(skills)
    signed_in = _status.c.state != AgentState.signed_out
    if not wanted:
        return int(session.scalar(select(func.count()).select_from(_status).where(signed_in)) or 0)
    rows = session.execute(select(_status.c.skills).where(signed_in))
    return sum(1 for (skills,) in rows if wanted <= parse_skills(skills))


# ---------------------------------------------------------------- the one way to move


def _move(
    session: Session,
    agent: Agent,
    to: AgentState,
    *,
    now: datetime,
    source: str,
    by_user_id: int | None,
    bell: Bell | None,
    reason: NotReadyReason | None = None,
    call_key: str | None = None,
    values: Mapping[str, Any] | None = None,
    savepoint: bool = False,
) -> Agent | None:
    """Compare-and-set ``agent`` (as read, with its version) into ``to``; the agent as it is
    now, or None when someone else moved them first. The ring is arranged outside any
    savepoint: core.db's after-commit hooks would run at the savepoint's release."""
    if source not in SOURCES:
        raise ValueError(f"unknown source of an agent's move: {source!r}")
    changes: dict[str, Any] = {
        "state": to,
        "reason": reason,
        "since": now,
        "call_key": call_key,
        "version": agent.version + 1,
    }
    if to == AgentState.ready:
        changes["idle_since"] = now
    if to != AgentState.wrap_up:
        changes["wrap_up_until"] = None
    if to == AgentState.signed_out:
        changes.update(extension=None, idle_since=None)
    changes.update(values or {})
    stmt = (
        update(_status)
        .where(_status.c.user_id == agent.user_id, _status.c.version == agent.version)
        .values(**changes)
    )
    if savepoint:  # a unique column may refuse it; the caller's work so far survives
        with session.begin_nested():
            result = session.execute(stmt)
    else:
        result = session.execute(stmt)
    if result.rowcount != 1:  # type: ignore[attr-defined]  # a CursorResult's
        return None
    session.execute(
        insert(_changes).values(
            user_id=agent.user_id,
            from_state=agent.state,
            to_state=to,
            reason=reason,
            call_key=call_key if call_key is not None else agent.call_key,
            at=now,
            by_user_id=by_user_id,
            source=source,
        )
    )
    if agent.state == AgentState.wrap_up and to != AgentState.wrap_up and agent.call_key:
        _note_wrap_up(session, agent, now)
    _ring_after_commit(session, bell)
    return Agent(
        user_id=agent.user_id,
        state=to,
        reason=changes["reason"],
        extension=changes.get("extension", agent.extension),
        skills=parse_skills(changes["skills"]) if "skills" in changes else agent.skills,
        since=now,
        idle_since=changes.get("idle_since", agent.idle_since),
        wrap_up_until=changes.get("wrap_up_until", agent.wrap_up_until),
        call_key=call_key,
        version=agent.version + 1,
    )


def _note_wrap_up(session: Session, agent: Agent, now: datetime) -> None:
    """The after-call work of the call just wrapped up, onto its record (the figures' handle
    time is talk + hold + wrap-up). Only the first operator's: a colleague who took the
    caller over by a transfer wraps up too, but the call is counted once."""
    record = table_of(CallRecord).c
    since = agent.since if agent.since.tzinfo else agent.since.replace(tzinfo=UTC)
    session.execute(
        update(table_of(CallRecord))
        .where(record.call_id == agent.call_key, record.agent_user_id == agent.user_id)
        .values(wrap_up_s=round(max(0.0, (now - since).total_seconds()), 3))
    )


def _ring_after_commit(session: Session, bell: Bell | None) -> None:
    """One ring per commit, however many moves the unit of work made. The mark names the
    transaction, so that after a rollback (which drops the ring) the next move rings again."""
    transaction = session.get_transaction()
    if bell is None or session.info.get("agents_bell_pending") is transaction:
        return
    session.info["agents_bell_pending"] = transaction

    def ring() -> None:
        session.info.pop("agents_bell_pending", None)
        bell.ring(TOPIC)

    after_commit(session, ring)


def _ensure_row(session: Session, user_id: int, now: datetime) -> Agent:
    agent = _read(session, user_id)
    if agent is not None:
        return agent
    try:
        with session.begin_nested():
            session.execute(
                insert(_status).values(
                    user_id=user_id, state=AgentState.signed_out, skills="", since=now, version=0
                )
            )
    except IntegrityError:
        pass  # a concurrent first sign-in made it
    agent = _read(session, user_id)
    if agent is None:
        raise NotFound(f"user {user_id} does not exist", user_id=user_id)
    return agent


def _console_move(
    session: Session,
    user_id: int,
    to: AgentState,
    allowed_from: frozenset[AgentState],
    *,
    now: datetime,
    source: str,
    by_user_id: int | None,
    bell: Bell | None,
    reason: NotReadyReason | None = None,
    what: str,
) -> Agent:
    for _attempt in range(CAS_ATTEMPTS):
        agent = _read(session, user_id) or signed_out(user_id, now)
        if agent.state not in allowed_from:
            raise IllegalTransition(
                f"cannot {what} while {agent.state.value.replace('_', ' ')}",
                state=agent.state.value,
                user_id=user_id,
            )
        moved = _move(
            session,
            agent,
            to,
            now=now,
            source=source,
            by_user_id=by_user_id,
            bell=bell,
            reason=reason,
        )
        if moved is not None:
            return moved
    raise Conflict("the operator's state keeps changing; try again", user_id=user_id)


# ---------------------------------------------------------------- the console's moves


def sign_in(
    session: Session,
    user: User,
    extension: str,
    skills: str | Iterable[str] | None,
    now: datetime,
    *,
    by_user_id: int | None = None,
    source: str = "console",
    bell: Bell | None = None,
) -> Agent:
    """Bind a seat (extension) to the operator and sign them in, not ready yet: the next
    move is theirs (ready). A seat is bound to one signed-in operator at a time."""
    if user.id is None:
        raise ValueError("sign_in needs a stored user")
    if not user.active:
        raise Conflict("this account is deactivated", user_id=user.id)
    if user.role not in SEATED_ROLES:
        raise InvalidInput(
            f"a {user.role.value} does not take calls at a seat", role=user.role.value
        )
    extension = check_extension(extension)
    wanted = parse_skills(skills)
    holder = session.scalar(
        select(_status.c.user_id).where(
            _status.c.extension == extension, _status.c.user_id != user.id
        )
    )
    if holder is not None:
        raise Conflict(f"seat {extension} is in use by another operator", extension=extension)
    for _attempt in range(CAS_ATTEMPTS):
        agent = _ensure_row(session, user.id, now)
        if agent.state != AgentState.signed_out:
            raise IllegalTransition(
                f"already signed in at seat {agent.extension}: sign out to change seats",
                state=agent.state.value,
                extension=agent.extension,
            )
        try:
            moved = _move(
                session,
                agent,
                AgentState.not_ready,
                now=now,
                source=source,
                by_user_id=by_user_id if by_user_id is not None else user.id,
                bell=bell,
                values={"extension": extension, "skills": ",".join(sorted(wanted))},
                savepoint=True,
            )
        except IntegrityError as exc:  # lost a race for the seat
            raise Conflict(
                f"seat {extension} is in use by another operator", extension=extension
            ) from exc
        if moved is not None:
            return moved
    raise Conflict("the operator's state keeps changing; try again", user_id=user.id)


def set_ready(
    session: Session,
    user_id: int,
    now: datetime,
    *,
    by_user_id: int | None = None,
    source: str = "console",
    bell: Bell | None = None,
) -> Agent:
    """Ready for calls (from not ready, or ending wrap-up early); the queue's clock of who
    waited longest starts now."""
    return _console_move(
        session,
        user_id,
        AgentState.ready,
        _SET_READY_FROM,
        now=now,
        source=source,
        by_user_id=by_user_id if by_user_id is not None else user_id,
        bell=bell,
        what="go ready",
    )


def set_not_ready(
    session: Session,
    user_id: int,
    reason: NotReadyReason | str,
    now: datetime,
    *,
    by_user_id: int | None = None,
    source: str = "console",
    bell: Bell | None = None,
) -> Agent:
    """Not ready, for a reason the figures keep (break, training, meeting, after-call work).
    "missed" is the queue's to set, not the operator's."""
    try:
        chosen = NotReadyReason(reason)
    except ValueError:
        raise InvalidInput(
            "the reason is one of: "
            + ", ".join(r.value for r in NotReadyReason if r != NotReadyReason.missed),
            field="reason",
        ) from None
    if chosen == NotReadyReason.missed:
        raise InvalidInput("'missed' is set by the queue when a ring is not answered")
    return _console_move(
        session,
        user_id,
        AgentState.not_ready,
        _SET_NOT_READY_FROM,
        now=now,
        source=source,
        by_user_id=by_user_id if by_user_id is not None else user_id,
        bell=bell,
        reason=chosen,
        what="go not ready",
    )


def sign_out(
    session: Session,
    user_id: int,
    now: datetime,
    *,
    by_user_id: int | None = None,
    force: bool = False,
    source: str = "console",
    bell: Bell | None = None,
) -> Agent:
    """Sign out and free the seat. Not while ringing or in a call — unless ``force`` (a
    supervisor's, for an operator who left, or a state stuck after a crash)."""
    allowed = frozenset(SIGNED_IN) if force else _SIGN_OUT_FROM
    return _console_move(
        session,
        user_id,
        AgentState.signed_out,
        allowed,
        now=now,
        source=source,
        by_user_id=by_user_id if by_user_id is not None else user_id,
        bell=bell,
        what="sign out",
    )


# ---------------------------------------------------------------- the queue's moves


def reserve(
    session: Session,
    skills: Iterable[str],
    call_key: str,
    now: datetime,
    *,
    bell: Bell | None = None,
) -> Agent | None:
    """The longest-idle ready operator with every one of ``skills`` and a bound seat, moved
    to ringing for ``call_key``; None when there is none. Wrap-ups that are over count as
    ready first."""
    if not call_key:
        raise ValueError("reserve needs the call's key")
    wanted = parse_skills(skills)
    end_wrap_ups(session, now, bell=bell)
    candidates = session.execute(
        select(_status)
        .where(_status.c.state == AgentState.ready, _status.c.extension.is_not(None))
        .order_by(_status.c.idle_since, _status.c.user_id)
    ).mappings()
    for row in list(candidates):
        agent = Agent.of(row)
        if not wanted <= agent.skills:
            continue
        moved = _move(
            session,
            agent,
            AgentState.ringing,
            now=now,
            source="acd",
            by_user_id=None,
            bell=bell,
            call_key=call_key,
            values={"idle_since": agent.idle_since},
        )
        if moved is not None:
            return moved
        # Lost this one to another process: on to the next longest idle.
    return None


def ring_for(
    session: Session, user_id: int, call_key: str, now: datetime, *, bell: Bell | None = None
) -> Agent | None:
    """This one operator, if ready at a bound seat, moved to ringing for ``call_key`` (a
    transfer from the console rings their seat: the queue must not ring it meanwhile);
    None when they are not ready."""
    agent = _read(session, user_id)
    if agent is None or agent.state != AgentState.ready or agent.extension is None:
        return None
    return _move(
        session,
        agent,
        AgentState.ringing,
        now=now,
        source="acd",
        by_user_id=None,
        bell=bell,
        call_key=call_key,
        values={"idle_since": agent.idle_since},
    )


def _on_call(
    session: Session, user_id: int, call_key: str, states: Iterable[AgentState]
) -> Agent | None:
    agent = _read(session, user_id)
    if agent is None or agent.call_key != call_key or agent.state not in set(states):
        return None
    return agent


def answered(
    session: Session, user_id: int, call_key: str, now: datetime, *, bell: Bell | None = None
) -> Agent | None:
    """The rung operator picked up: on call. None if they are not ringing for this call."""
    agent = _on_call(session, user_id, call_key, [AgentState.ringing])
    if agent is None:
        return None
    return _move(
        session,
        agent,
        AgentState.on_call,
        now=now,
        source="acd",
        by_user_id=None,
        bell=bell,
        call_key=call_key,
    )


def missed(
    session: Session, user_id: int, call_key: str, now: datetime, *, bell: Bell | None = None
) -> Agent | None:
    """No answer within the ring timeout: not ready (missed), so that the next call does not
    ring an empty desk. None if they are not ringing for this call."""
    agent = _on_call(session, user_id, call_key, [AgentState.ringing])
    if agent is None:
        return None
    return _move(
        session,
        agent,
        AgentState.not_ready,
        now=now,
        source="acd",
        by_user_id=None,
        bell=bell,
        reason=NotReadyReason.missed,
        call_key=None,
    )


def release(
    session: Session, user_id: int, call_key: str, now: datetime, *, bell: Bell | None = None
) -> Agent | None:
    """The ring stopped through no fault of the operator (the caller hung up, the call went
    to another): ready again, keeping their place in the idle order. None if they are not
    ringing for this call."""
    agent = _on_call(session, user_id, call_key, [AgentState.ringing])
    if agent is None:
        return None
    return _move(
        session,
        agent,
        AgentState.ready,
        now=now,
        source="acd",
        by_user_id=None,
        bell=bell,
        values={"idle_since": agent.idle_since or now},
    )


def call_ended(
    session: Session,
    user_id: int,
    call_key: str,
    now: datetime,
    *,
    wrap_up_s: float = DEFAULT_WRAP_UP_S,
    bell: Bell | None = None,
) -> Agent | None:
    """The call is over. From a call: wrap-up for ``wrap_up_s`` (settings.acd.wrap_up_s),
    then ready by itself (``end_wrap_ups``); with no wrap-up time, ready at once. While still
    ringing (the caller hung up first): ready again, keeping their place in the idle order.
    None if they are not on this call."""
    agent = _on_call(session, user_id, call_key, [AgentState.ringing, AgentState.on_call])
    if agent is None:
        return None
    if agent.state == AgentState.ringing:
        return release(session, user_id, call_key, now, bell=bell)
    if wrap_up_s <= 0:
        return _move(
            session, agent, AgentState.ready, now=now, source="acd", by_user_id=None, bell=bell
        )
    return _move(
        session,
        agent,
        AgentState.wrap_up,
        now=now,
        source="acd",
        by_user_id=None,
        bell=bell,
        call_key=call_key,
        values={"wrap_up_until": now + timedelta(seconds=wrap_up_s)},
    )


def end_wrap_ups(
    session: Session, now: datetime, *, user_id: int | None = None, bell: Bell | None = None
) -> list[Agent]:
    """Every wrap-up whose time is over (of one operator, when given) becomes ready; those
    moved. The queue calls it at its timer's deadline, ``reserve`` before choosing, and the
    console when it shows the panel — whichever comes first; the others find nothing."""
    stmt = select(_status).where(
        _status.c.state == AgentState.wrap_up, _status.c.wrap_up_until <= now
    )
    if user_id is not None:
        stmt = stmt.where(_status.c.user_id == user_id)
    moved = []
    for row in list(session.execute(stmt).mappings()):
        agent = Agent.of(row)
        done = _move(
            session,
            agent,
            AgentState.ready,
            now=now,
            source="acd",
            by_user_id=None,
            bell=bell,
        )
        if done is not None:
            moved.append(done)
    return moved


# ---------------------------------------------------------------- the reconciler's moves


def free_from_lost_call(
    session: Session,
    agent: Agent,
    now: datetime,
    *,
    wrap_up_until: datetime | None = None,
    bell: Bell | None = None,
) -> Agent | None:
    """``agent`` (as read: the compare-and-set is on that version) is held by a call that no
    longer exists — its end was never reported (hotline.calls.reconciler). Ringing: ready
    again, keeping their place in the idle order, as ``release``. On a call: wrap-up until
    ``wrap_up_until`` when that is still ahead, else ready, as ``call_ended`` would have
    left them. None when the operator moved meanwhile: whoever moved them knew better."""
    if agent.state == AgentState.ringing:
        return _move(
            session,
            agent,
            AgentState.ready,
            now=now,
            source="reconciler",
            by_user_id=None,
            bell=bell,
            values={"idle_since": agent.idle_since or now},
        )
    if agent.state != AgentState.on_call:
        raise IllegalTransition(
            f"only a ringing or on-call operator is held by a call, not {agent.state.value}",
            state=agent.state.value,
            user_id=agent.user_id,
        )
    if wrap_up_until is not None and wrap_up_until > now:
        return _move(
            session,
            agent,
            AgentState.wrap_up,
            now=now,
            source="reconciler",
            by_user_id=None,
            bell=bell,
            call_key=agent.call_key,
            values={"wrap_up_until": wrap_up_until},
        )
    return _move(
        session, agent, AgentState.ready, now=now, source="reconciler", by_user_id=None, bell=bell
    )


def end_lost_wrap_ups(
    session: Session, now: datetime, *, late_by: timedelta, bell: Bell | None = None
) -> list[Agent]:
    """Wrap-ups over for more than ``late_by`` that nobody ended (a lost timer) become
    ready, stored as the reconciler's moves; those moved. ``end_wrap_ups`` is the timely
    way; this one finds what it missed."""
    stmt = select(_status).where(
        _status.c.state == AgentState.wrap_up, _status.c.wrap_up_until <= now - late_by
    )
    moved = []
    for row in list(session.execute(stmt).mappings()):
        done = _move(
            session,
            Agent.of(row),
            AgentState.ready,
            now=now,
            source="reconciler",
            by_user_id=None,
            bell=bell,
        )
        if done is not None:
            moved.append(done)
    return moved


def next_wrap_up_end(session: Session) -> datetime | None:
    """When the next wrap-up ends (the queue sets its timer to it)."""
    found: datetime | None = session.scalar(
        select(func.min(_status.c.wrap_up_until)).where(_status.c.state == AgentState.wrap_up)
    )
    return found


def changes_of(session: Session, user_id: int, *, limit: int = 100) -> list[AgentStateChange]:
    """The operator's moves, oldest first (the newest ``limit``)."""
    rows = session.execute(
        select(_changes)
        .where(_changes.c.user_id == user_id)
        .order_by(_changes.c.id.desc())
        .limit(limit)
    ).mappings()
    return [AgentStateChange.model_validate(dict(r)) for r in reversed(list(rows))]


def revision(session: Session) -> int:
    """A number that grows with every committed move, whatever order moves commit in (the
    sum of the operators' versions: one row per operator, so it is cheap to read). The live
    pages compare it to tell whether anyone's state changed; the changes' ids could not say
    it, for an id is taken before its commit and a smaller one may become visible later."""
    return int(session.scalar(select(func.coalesce(func.sum(_status.c.version), 0))) or 0)


# ---------------------------------------------------------------- crash recovery's moves
# (hotline.calls.recovery: the SIP edge that carried the call died, so no queue will move
# these operators again — the call they are held by exists no more.)

_HELD = (AgentState.ringing, AgentState.on_call)


def held_by_calls(session: Session) -> dict[str, list[int]]:
    """Operators held by a call now — rung for it or on it — by the call's key. Few rows
    (one per operator), so recovery asks here first and then which calls are lost."""
    held: dict[str, list[int]] = {}
    rows = session.execute(
        select(_status.c.call_key, _status.c.user_id)
        .where(_status.c.state.in_(_HELD), _status.c.call_key.is_not(None))
        .order_by(_status.c.user_id)
    )
    for call_key, user_id in rows:
        held.setdefault(call_key, []).append(user_id)
    return held


def release_from_lost_call(
    session: Session,
    user_id: int,
    call_key: str,
    now: datetime,
    *,
    wrap_up_s: float = DEFAULT_WRAP_UP_S,
    bell: Bell | None = None,
) -> Agent | None:
    """The call holding the operator was lost with its SIP edge: from the call, wrap-up for
    ``wrap_up_s`` from now (their draft ticket is still theirs to decide), or ready at once
    with no wrap-up time; rung but not answered, ready again in their place in the idle
    order — the reconciler's moves (``free_from_lost_call``). None if they are no longer
    held by this call; a compare-and-set lost to another writer is read again."""
    for _attempt in range(CAS_ATTEMPTS):
        agent = _on_call(session, user_id, call_key, _HELD)
        if agent is None:
            return None
        until = now + timedelta(seconds=wrap_up_s) if wrap_up_s > 0 else None
        moved = free_from_lost_call(session, agent, now, wrap_up_until=until, bell=bell)
        if moved is not None:
            return moved
    raise Conflict("the operator's state keeps changing; try again", user_id=user_id)
