"""Crash recovery of calls: each `hotline sip` process (an edge) has a row of its own with a
heartbeat; the calls it answered carry its id. When an edge dies mid-call (`kill -9`, a lost
host) its calls stay open — no end, a WAV header that still says a fraction of a second, a
ticket in intake with placeholder text, an operator stuck "on call" for ever, callers shown
waiting in a queue that no longer exists. `recover_calls` closes them and frees the operators
they held: at the next start of an edge on the same host, and from the periodic sweep for a
host that never comes back."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlmodel import Session

from accounts import agents
from core.bell import Bell
from core.clock import Clock
from core.db import after_commit, session_scope, table_of
from core.runtime import SessionFactory
from telephony.endpoint import CallDirection, Disposition
from telephony.models import CallRecord, QueueOutcome, SipEdgeRecord
from telephony.recording import RecordingError, repair_wav

log = logging.getLogger(__name__)

EDGE_LOST = "edge_lost"  # the end_reason of a call closed by crash recovery


@dataclass(frozen=True)
class EdgeIdentity:
    """This process as an edge: a new id at every start."""

    id: str
    host: str
    pid: int

    @classmethod
    def new(cls, host: str) -> EdgeIdentity:
        return cls(id=str(uuid.uuid4()), host=host, pid=os.getpid())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


# ---------------------------------------------------------------- the edge's own row


def register_edge(session_factory: SessionFactory, *, edge: EdgeIdentity, now: datetime) -> None:
    with session_scope(session_factory) as session:
        session.add(
            SipEdgeRecord(
                id=edge.id, host=edge.host, pid=edge.pid, started_at=now, heartbeat_at=now
            )
        )


def beat(session_factory: SessionFactory, *, edge_id: str, now: datetime) -> None:
    table = table_of(SipEdgeRecord)
    with session_scope(session_factory) as session:
        session.execute(
            update(table)
            .where(table.c.id == edge_id, table.c.dead_at.is_(None))
            .values(heartbeat_at=now)
        )


def mark_stopped(session_factory: SessionFactory, *, edge_id: str, now: datetime) -> None:
    """A clean stop: the edge's row is dead at once; a call still open is the sweep's."""
    table = table_of(SipEdgeRecord)
    with session_scope(session_factory) as session:
        session.execute(
            update(table)
            .where(table.c.id == edge_id, table.c.dead_at.is_(None))
            .values(dead_at=now)
        )


class Heartbeat:
    """Refreshes the edge's heartbeat every `interval_s` in a daemon thread until stopped.
    A failed write (the database away for a moment) is logged and tried at the next beat."""

    def __init__(
        self,
        session_factory: SessionFactory,
        *,
        edge_id: str,
        clock: Clock,
        interval_s: float,
        stop: threading.Event,
    ) -> None:
        self._beat = partial(beat, session_factory, edge_id=edge_id)
        self._clock = clock
        self._interval_s = interval_s
        self._stop = stop
        self.thread = threading.Thread(target=self._run, name="edge-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._beat(now=self._clock.now())
            except Exception:
                log.exception("the SIP edge's heartbeat could not be written")


# ---------------------------------------------------------------- recovery


@dataclass(frozen=True)
class _Lost:
    call_id: str
    edge_id: str
    arrived_at: datetime
    answered_at: datetime | None
    recording_path: str | None
    queued_at: datetime | None
    queue_left_at: datetime | None
    queue_outcome: str | None
    agent_answered_at: datetime | None
    last_seen: datetime

    @property
    def recording_started(self) -> datetime | None:
        """When its recording began: an operator's call is recorded from the bridge (one
        stereo file), a call the robot took after the queue from its overflow, any other
        from the edge's answer."""
        if self.agent_answered_at is not None:
            return self.agent_answered_at
        if self.queued_at is not None and self.queue_left_at is not None:
            return self.queue_left_at
        return self.answered_at


def _lost_edges(
    session: Session,
    *,
    now: datetime,
    stale_after: timedelta,
    this_edge: EdgeIdentity | None,
    alive: Callable[[int], bool],
) -> dict[str, datetime]:
    """The edges whose calls are to be closed, with when each was last seen alive."""
    table = table_of(SipEdgeRecord)
    stale = or_(table.c.heartbeat_at < now - stale_after, table.c.dead_at.is_not(None))
    cond: Any = stale
    if this_edge is not None:
        # A predecessor on this host: its process is gone, whatever its heartbeat says.
        same_host = and_(table.c.host == this_edge.host, table.c.id != this_edge.id)
        cond = or_(stale, same_host)
    rows = session.execute(
        select(table.c.id, table.c.host, table.c.pid, table.c.heartbeat_at, table.c.dead_at).where(
            cond
        )
    ).all()
    lost = {}
    for row in rows:
        if this_edge is not None and row.id == this_edge.id:
            continue
        is_stale = row.dead_at is not None or row.heartbeat_at < now - stale_after
        # Our own pid on a predecessor's row: it was a process before us (a container's
        # pid 1 restarted); any other pid is checked.
        if is_stale or (this_edge is not None and row.pid == this_edge.pid) or not alive(row.pid):
            lost[row.id] = row.dead_at or row.heartbeat_at
    return lost


def _end_of(lost: _Lost) -> tuple[datetime, str | None]:
    """When the call ended — the start of its recording plus the audio written (the last
    evidence of it), else the edge's last heartbeat — and the recording path to keep (the
    file may never have been made: a status query, a callback, a caller still queued)."""
    start = lost.answered_at or lost.arrived_at
    began = lost.recording_started
    if lost.recording_path and began is not None:
        path = Path(lost.recording_path)
        if path.is_file():
            try:
                return began + timedelta(seconds=repair_wav(path)), lost.recording_path
            except (RecordingError, OSError) as exc:
                log.warning("recording of call %s cannot be repaired: %s", lost.call_id, exc)
    return max(start, min(lost.last_seen, start + timedelta(hours=12))), lost.recording_path


def recover_calls(
    session_factory: SessionFactory,
    *,
    now: datetime,
    stale_after: timedelta,
    enqueue_transcription: Callable[[str], Any],
    this_edge: EdgeIdentity | None = None,
    alive: Callable[[int], bool] = pid_alive,
    wrap_up_s: float = agents.DEFAULT_WRAP_UP_S,
    bell: Bell | None = None,
) -> list[str]:
    """Close every call left open by a dead edge, exactly once even with several
    recoverers at a time, and queue the offline transcription of those whose ticket still
    waits for its transcript (as for a hang-up whose live transcript was unavailable): a
    robot's report leaves intake and is dispatched, an operator's draft gets the caller's
    words (the stereo file's left channel) and stays the operator's. A call still waiting
    in the operators' queue leaves it as ``lost``. The operators those calls held (ringing
    or on the call) are released (``release_operators``), so that they take the next call.

    A dead edge is one whose heartbeat is older than `stale_after`, or — given `this_edge`,
    at an edge's start — an earlier edge of the same host whose process is gone. Returns
    the Call-IDs this call closed."""
    with session_scope(session_factory) as session:
        edges = _lost_edges(
            session, now=now, stale_after=stale_after, this_edge=this_edge, alive=alive
        )
        if not edges:
            return []
        calls = table_of(CallRecord)
        rows = session.execute(
            select(
                calls.c.call_id,
                calls.c.edge_id,
                calls.c.arrived_at,
                calls.c.answered_at,
                calls.c.recording_path,
                calls.c.queued_at,
                calls.c.queue_left_at,
                calls.c.queue_outcome,
                calls.c.agent_answered_at,
            ).where(calls.c.ended_at.is_(None), calls.c.edge_id.in_(list(edges)))
        ).all()
    closed = []
    for row in rows:
        lost = _Lost(**row._mapping, last_seen=edges[row.edge_id])
        if _close(session_factory, lost=lost, now=now, enqueue=enqueue_transcription):
            closed.append(lost.call_id)
    release_operators(
        session_factory, edge_ids=list(edges), now=now, wrap_up_s=wrap_up_s, bell=bell
    )
    table = table_of(SipEdgeRecord)
    with session_scope(session_factory) as session:
        session.execute(
            update(table)
            .where(table.c.id.in_(list(edges)), table.c.dead_at.is_(None))
            .values(dead_at=now)
        )
    if closed:
        log.warning("closed %d call(s) of lost SIP edges: %s", len(closed), ", ".join(closed))
    return closed


def _close(
    session_factory: SessionFactory, *, lost: _Lost, now: datetime, enqueue: Callable[[str], Any]
) -> bool:
    ended, recording = _end_of(lost)
    start = lost.answered_at or ended
    values: dict[str, Any] = {
        "ended_at": ended,
        "disposition": Disposition.FAILED,
        "end_reason": EDGE_LOST,
        "wait_s": max(0.0, (start - lost.arrived_at).total_seconds()),
        "talk_s": (
            max(0.0, (ended - lost.answered_at).total_seconds()) if lost.answered_at else 0.0
        ),
        "recording_path": recording,
        "updated_at": now,
    }
    if lost.queued_at is not None and lost.queue_left_at is None:
        # Still waiting when its edge died: the platform lost it, the caller did not leave.
        values.update(queue_left_at=max(lost.queued_at, ended), queue_outcome=QueueOutcome.lost)
    table = table_of(CallRecord)
    with session_scope(session_factory) as session:
        done = session.exec(
            update(table)
            .where(table.c.call_id == lost.call_id, table.c.ended_at.is_(None))
            .values(**values)
        )
        if done.rowcount != 1:
            return False  # another recoverer (or the edge itself) closed it
        row = session.execute(
            select(table.c.ticket_id, table.c.transcript, table.c.direction).where(
                table.c.call_id == lost.call_id
            )
        ).one()
        # A report's ticket waits for its transcript; a callback's ticket waits for nothing.
        inbound = row.direction == CallDirection.INBOUND
        if inbound and row.ticket_id is not None and row.transcript is None:
            after_commit(session, partial(enqueue, lost.call_id))
    return True


def release_operators(
    session_factory: SessionFactory,
    *,
    edge_ids: list[str],
    now: datetime,
    wrap_up_s: float = agents.DEFAULT_WRAP_UP_S,
    bell: Bell | None = None,
) -> list[int]:
    """Operators held by a call of the dead edges — rung for it, or on it — released: to
    wrap-up (their draft ticket is still to decide) or, when only rung, ready again. Found
    from the operators' side, so that an operator is freed even when the edge wrote the
    call's end and died before it moved them. Returns the operators moved."""
    if not edge_ids:
        return []
    moved = []
    with session_scope(session_factory) as session:
        held = agents.held_by_calls(session)
        if not held:
            return []
        calls = table_of(CallRecord)
        dead = set(edge_ids)  # every edge ever lost: matched here, not sent in the query
        of_dead_edges = [
            call_id
            for call_id, edge_id in session.execute(
                select(calls.c.call_id, calls.c.edge_id).where(calls.c.call_id.in_(list(held)))
            )
            if edge_id in dead
        ]
        for call_key in sorted(of_dead_edges):
            for user_id in held[call_key]:
                agent = agents.release_from_lost_call(
                    session, user_id, call_key, now, wrap_up_s=wrap_up_s, bell=bell
                )
                if agent is not None:
                    moved.append(user_id)
    if moved:
        log.warning(
            "released %d operator(s) held by calls of lost SIP edges: %s",
            len(moved),
            ", ".join(map(str, moved)),
        )
    return moved
