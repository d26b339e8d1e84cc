"""The operator's console controls a bridged call: hold, blind and attended transfer, a
three-way call with a department (三方通话), and a supervisor listening in.

A page and the call live in different processes: the web process that took the click, and
the ``hotline sip`` process (the edge) whose threads relay the call's audio. The console
writes a ``CallCommand`` and rings the doorbell (``COMMAND_TOPIC``); the edge that holds the
call takes it (``hotline.calls.control_runner``), carries it out on the call's
``telephony.bridge.Bridge`` and writes what the call's controls stand at into the call
record (``control``, with ``control_seq`` growing), which the pages' live stream carries to
every console showing the call. Nothing is lost between them: a command is a row, a missed
doorbell is made up by the edge's next look, and a command nobody takes within
``TAKE_WITHIN`` (its edge died, the call ended) is failed with the reason.

Who may: the operator who has the call, for everything but listening in; supervisors and
admins, for anything (a supervisor takes over a call that goes wrong). Targets are a seat's
extension (an operator, a supervisor) or an outside number (a department's hotline), which
the edge dials through ``settings.acd.outside_uri`` (or the callback line).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session, col

from accounts.models import Role
from core.bell import Bell
from core.db import after_commit, table_of
from core.errors import Conflict
from telephony.models import (
    CallCommand,
    CallCommandKind,
    CallCommandState,
    CallRecord,
    QueueOutcome,
)

COMMAND_TOPIC = "call-control"
TAKE_WITHIN = timedelta(seconds=15)  # a command no edge took by then is failed
SUPERVISING = frozenset({Role.supervisor, Role.admin})
NEEDS_TARGET = frozenset(
    {CallCommandKind.transfer, CallCommandKind.consult, CallCommandKind.monitor}
)
EXTENSION = re.compile(r"^[0-9]{2,16}$")
OUTSIDE = re.compile(r"^\+?[0-9]{3,20}$")


class ControlRefused(Conflict):
    """A console request that cannot be carried out, in words for the operator."""

    code = "call_control_refused"


def clean_target(raw: str) -> str:
    """A seat's extension or an outside number, with the separators people type dropped."""
    target = re.sub(r"[\s\-().]", "", raw or "")
    if not (EXTENSION.match(target) or OUTSIDE.match(target)):
        raise ControlRefused("Enter a seat's extension or a telephone number (digits only).")
    return target


@dataclass(frozen=True)
class Controls:
    """What a bridged call's controls stand at, as the edge last wrote it."""

    held: bool = False
    transfer: dict[str, Any] | None = None  # {"kind", "target", "state", "outcome"}
    three_way: str | None = None  # the third party's target while a three-way is up
    monitors: int = 0
    last: dict[str, Any] | None = None  # the last command: {"kind", "state", "detail"}

    @classmethod
    def parse(cls, raw: str | None) -> Controls:
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        return cls(
            held=bool(data.get("held")),
            transfer=data.get("transfer") if isinstance(data.get("transfer"), dict) else None,
            three_way=data.get("three_way") or None,
            monitors=int(data.get("monitors") or 0),
            last=data.get("last") if isinstance(data.get("last"), dict) else None,
        )

    def dump(self) -> str:
        return json.dumps(
            {
                "held": self.held,
                "transfer": self.transfer,
                "three_way": self.three_way,
                "monitors": self.monitors,
                "last": self.last,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @property
    def consulting(self) -> bool:
        return bool(self.transfer and self.transfer.get("state") == "consulting")

    @property
    def ringing(self) -> bool:
        return bool(self.transfer and self.transfer.get("state") == "ringing")


def controlled_call(session: Session, call_id: str) -> CallRecord | None:
    """The call as a console may control it: answered by an operator and not ended."""
    record = session.scalar(select(CallRecord).where(col(CallRecord.call_id) == call_id))
    if record is None or record.queue_outcome != QueueOutcome.agent or record.ended_at is not None:
        return None
    return record


def may_control(record: CallRecord, *, user_id: int, role: Role, kind: CallCommandKind) -> bool:
    if role in SUPERVISING:
        return True
    return kind is not CallCommandKind.monitor and record.agent_user_id == user_id


def request(
    session: Session,
    *,
    call_id: str,
    kind: CallCommandKind,
    target: str = "",
    user_id: int,
    role: Role,
    now: datetime,
    bell: Bell | None = None,
) -> CallCommand:
    """Ask the edge holding ``call_id`` for ``kind``; raises ``ControlRefused`` with the
    reason when it cannot be asked (the edge's own refusals come back in the command)."""
    record = controlled_call(session, call_id)
    if record is None:
        raise ControlRefused("This call is not on an operator's line any more.")
    if not may_control(record, user_id=user_id, role=role, kind=kind):
        raise ControlRefused(
            "Only a supervisor may listen in."
            if kind is CallCommandKind.monitor
            else "Only the operator on this call, or a supervisor, may control it."
        )
    if kind in NEEDS_TARGET:
        target = clean_target(target)
        if kind is CallCommandKind.monitor and not EXTENSION.match(target):
            raise ControlRefused("Listening in rings your own seat: enter its extension.")
    else:
        target = ""
    pending = session.scalar(
        select(CallCommand).where(
            col(CallCommand.call_id) == call_id,
            col(CallCommand.kind) == kind,
            col(CallCommand.target) == target,
            col(CallCommand.state).in_([CallCommandState.pending, CallCommandState.running]),
            col(CallCommand.requested_at) > now - TAKE_WITHIN,
        )
    )
    if pending is not None:  # a double click, or the same request from two tabs
        return pending
    command = CallCommand(
        call_id=call_id,
        edge_id=record.edge_id,
        kind=kind,
        target=target,
        requested_by=user_id,
        requested_at=now,
    )
    session.add(command)
    session.flush()
    if bell is not None:
        after_commit(session, partial(bell.ring, COMMAND_TOPIC))
    return command


def recent_commands(session: Session, call_id: str, *, limit: int = 5) -> list[CallCommand]:
    return list(
        session.scalars(
            select(CallCommand)
            .where(col(CallCommand.call_id) == call_id)
            .order_by(col(CallCommand.id).desc())
            .limit(limit)
        )
    )


def write_controls(session: Session, call_id: str, controls: Controls, now: datetime) -> None:
    """The edge's side: the call's controls as they stand now, seen by every console."""
    table = table_of(CallRecord)
    session.execute(
        update(table)
        .where(table.c.call_id == call_id)
        .values(
            control=controls.dump(),
            control_seq=table.c.control_seq + 1,
            updated_at=now,
        )
    )


def finish(
    session: Session,
    command_id: int,
    state: CallCommandState,
    detail: str,
    now: datetime,
) -> bool:
    """A command's result, written once: False when it was finished already."""
    table = table_of(CallCommand)
    done = session.execute(
        update(table)
        .where(
            table.c.id == command_id,
            table.c.state.in_([CallCommandState.pending.value, CallCommandState.running.value]),
        )
        .values(state=state.value, detail=detail[:500], done_at=now)
    )
    return bool(getattr(done, "rowcount", 0))


def claim(session: Session, command_id: int) -> bool:
    """pending -> running, by compare-and-set: exactly one edge (and one wake-up) runs it."""
    table = table_of(CallCommand)
    claimed = session.execute(
        update(table)
        .where(table.c.id == command_id, table.c.state == CallCommandState.pending.value)
        .values(state=CallCommandState.running.value)
    )
    return bool(getattr(claimed, "rowcount", 0))


def expire_untaken(session: Session, now: datetime) -> int:
    """Commands nobody took in time (their edge died; the call ended first): failed."""
    table = table_of(CallCommand)
    done = session.execute(
        update(table)
        .where(
            table.c.state == CallCommandState.pending.value,
            table.c.requested_at < now - TAKE_WITHIN,
        )
        .values(
            state=CallCommandState.failed.value,
            detail="not_taken",
            done_at=now,
        )
    )
    return int(getattr(done, "rowcount", 0) or 0)
