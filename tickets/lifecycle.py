"""The 12345 ticket lifecycle as an explicit state machine (pure; no I/O)."""

from __future__ import annotations

from enum import StrEnum

from core.errors import IllegalTransition
from tickets.models import Status

S = Status


class Action(StrEnum):
    create = "create"
    update = "update"
    close_at_intake = "close_at_intake"  # 直接办结: answered from the knowledge base
    queue = "queue"  # no rule fired: to the manual dispatch queue
    dispatch = "dispatch"  # 派单
    redispatch = "redispatch"  # 改派 / manual override
    sign = "sign"  # 签收
    start = "start"  # 办理
    reply = "reply"  # 回复
    approve_reply = "approve_reply"  # 审核通过
    send_back = "send_back"  # 审核退回
    callback = "callback"  # 回访
    close = "close"  # 办结 without a callback (caller unreachable, anonymous)
    return_ = "return"  # 退单
    uphold_return = "uphold_return"  # return refused: back to the unit
    merge = "merge"  # 并单
    close_merged = "close_merged"  # the parent closed
    reopen = "reopen"  # 重办
    archive = "archive"  # 归档
    note = "note"  # in-place events: notes, extensions, escalations, co-unit replies


ACTIVE = frozenset({S.dispatched, S.signed, S.in_progress})
OPEN = frozenset(set(S) - {S.closed, S.archived, S.merged})
EDITABLE = frozenset(
    {S.intake, S.pending_dispatch, S.dispatched, S.signed, S.in_progress, S.returned, S.reopened}
)

# action -> {from status -> allowed target statuses}
TRANSITIONS: dict[Action, dict[Status, frozenset[Status]]] = {
    Action.close_at_intake: {s: frozenset({S.closed}) for s in (S.intake, S.pending_dispatch)},
    Action.queue: {
        S.intake: frozenset({S.pending_dispatch}),
        S.reopened: frozenset({S.pending_dispatch}),
    },
    Action.dispatch: {
        s: frozenset({S.dispatched}) for s in (S.intake, S.pending_dispatch, S.reopened)
    },
    Action.redispatch: {
        s: frozenset({S.dispatched})
        for s in (S.dispatched, S.signed, S.in_progress, S.returned, S.reopened)
    },
    Action.sign: {S.dispatched: frozenset({S.signed})},
    Action.start: {S.signed: frozenset({S.in_progress})},
    Action.reply: {s: frozenset({S.replied}) for s in (S.signed, S.in_progress)},
    Action.approve_reply: {S.replied: frozenset({S.reviewed})},
    Action.send_back: {S.replied: frozenset({S.in_progress})},
    Action.callback: {S.reviewed: frozenset({S.closed, S.reopened})},
    Action.close: {S.reviewed: frozenset({S.closed})},
    Action.return_: {s: frozenset({S.returned}) for s in ACTIVE},
    Action.uphold_return: {S.returned: ACTIVE},
    Action.merge: {
        s: frozenset({S.merged})
        for s in (
            S.intake,
            S.pending_dispatch,
            S.dispatched,
            S.signed,
            S.in_progress,
            S.returned,
            S.reopened,
        )
    },
    Action.close_merged: {S.merged: frozenset({S.closed})},
    Action.reopen: {S.closed: frozenset({S.reopened})},
    Action.archive: {S.closed: frozenset({S.archived})},
}

# Actions that leave the status as it is, and where they are allowed.
IN_PLACE: dict[Action, frozenset[Status]] = {
    Action.update: EDITABLE,
    Action.note: frozenset(set(S) - {S.archived}),
}


def allowed_actions(status: Status) -> list[Action]:
    out = [a for a, table in TRANSITIONS.items() if status in table]
    out += [a for a, states in IN_PLACE.items() if status in states]
    return out


def next_status(current: Status, action: Action, target: Status | None = None) -> Status:
    """The status after `action`; raise IllegalTransition if the lifecycle forbids it.

    Most actions have exactly one target; those with several (callback, uphold_return) must
    name the one they mean.
    """
    if action in IN_PLACE:
        if current not in IN_PLACE[action]:
            raise IllegalTransition(
                f"cannot {action.value} a ticket in status {current.value}",
                status=current.value,
                action=action.value,
            )
        return current
    targets = TRANSITIONS.get(action, {}).get(current)
    if not targets:
        raise IllegalTransition(
            f"cannot {action.value} a ticket in status {current.value}",
            status=current.value,
            action=action.value,
        )
    if target is None:
        if len(targets) != 1:
            raise IllegalTransition(
                f"{action.value} from {current.value} needs an explicit target",
                status=current.value,
                action=action.value,
            )
        return next(iter(targets))
    if target not in targets:
        raise IllegalTransition(
            f"{action.value} cannot take a ticket from {current.value} to {target.value}",
            status=current.value,
            action=action.value,
            target=target.value,
        )
    return target
