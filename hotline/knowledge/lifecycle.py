"""An article's review states and who may move them (pure; no I/O).

共建共享: units write and update the articles of their own domain, the centre approves. A
published article being edited stays in service at its published version until the centre
approves the new one; a retired article is never shown again and cannot be edited."""

from __future__ import annotations

from enum import StrEnum

from accounts.models import Role, User
from core.errors import Forbidden, IllegalTransition
from hotline.knowledge.models import ArticleStatus

S = ArticleStatus


class Action(StrEnum):
    edit = "edit"
    submit = "submit"  # 提交审核
    approve = "approve"  # 审核通过, publishes the head version
    send_back = "send_back"  # 退回修改, with a reason
    retire = "retire"  # 下线


TRANSITIONS: dict[Action, dict[ArticleStatus, ArticleStatus]] = {
    Action.edit: {S.draft: S.draft, S.published: S.draft},
    Action.submit: {S.draft: S.in_review},
    Action.approve: {S.in_review: S.published},
    Action.send_back: {S.in_review: S.draft},
    Action.retire: {S.draft: S.retired, S.in_review: S.retired, S.published: S.retired},
}

# Centre staff who write any unit's articles; of them, who approve. Operators read.
CENTRE_EDITORS = frozenset({Role.dispatcher, Role.supervisor, Role.admin})
CENTRE_APPROVERS = frozenset({Role.supervisor, Role.admin})


def next_status(action: Action, current: ArticleStatus) -> ArticleStatus:
    target = TRANSITIONS[action].get(current)
    if target is None:
        raise IllegalTransition(
            f"cannot {action.value} an article that is {current.value}",
            action=action.value,
            status=current.value,
        )
    return target


def may_write(user: User, owner_unit_id: int) -> bool:
    """Centre editors write for every unit; a unit's handler for their own unit only."""
    if user.role in CENTRE_EDITORS:
        return True
    return user.role == Role.handler and user.unit_id is not None and user.unit_id == owner_unit_id


def check_write(user: User, owner_unit_id: int) -> None:
    if not may_write(user, owner_unit_id):
        raise Forbidden(
            "only centre staff or the responsible unit may write this article",
            owner_unit_id=owner_unit_id,
        )


def check_centre(user: User, action: Action) -> None:
    """Approving and sending back are the centre's review; retiring withdraws an answer the
    whole city relies on."""
    allowed = CENTRE_APPROVERS if action in (Action.approve, Action.send_back) else CENTRE_EDITORS
    if user.role not in allowed:
        raise Forbidden(f"only the centre may {action.value} articles", action=action.value)


def sees_unpublished(user: User, owner_unit_id: int) -> bool:
    """Drafts and articles in review are seen by centre editors and the owning unit."""
    return may_write(user, owner_unit_id)
