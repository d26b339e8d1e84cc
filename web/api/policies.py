"""SLA policies: the time limits of each clock and the escalation chain."""

from __future__ import annotations

from fastapi import APIRouter

from dispatch import policies
from dispatch.models import SlaPolicy
from dispatch.policies import SlaPolicyCreate, SlaPolicyUpdate
from web.deps import Admin, CurrentUser, PathId, SessionDep, patch_body
from web.errors import ERROR_RESPONSES

router = APIRouter(prefix="/sla-policies", tags=["sla-policies"], responses=ERROR_RESPONSES)


@router.get("", response_model=list[SlaPolicy])
def list_policies(
    session: SessionDep, _: CurrentUser, active_only: bool = False
) -> list[SlaPolicy]:
    return policies.list_policies(session, active_only=active_only)


@router.get("/{policy_id}", response_model=SlaPolicy)
def get_policy(policy_id: PathId, session: SessionDep, _: CurrentUser) -> SlaPolicy:
    return policies.get_policy(session, policy_id=policy_id)


@router.post("", status_code=201, response_model=SlaPolicy)
def create_policy(data: SlaPolicyCreate, session: SessionDep, _: Admin) -> SlaPolicy:
    return policies.create_policy(session, data=data)


@router.patch("/{policy_id}", response_model=SlaPolicy)
def update_policy(
    policy_id: PathId, data: SlaPolicyUpdate, session: SessionDep, _: Admin
) -> SlaPolicy:
    """New deadlines apply to dispatches from now on; running clocks keep theirs."""
    return policies.update_policy(session, policy_id=policy_id, changes=patch_body(data, SlaPolicy))


@router.delete("/{policy_id}", response_model=SlaPolicy)
def deactivate_policy(policy_id: PathId, session: SessionDep, _: Admin) -> SlaPolicy:
    """Deactivates: assignments keep pointing at the policy that set their deadlines."""
    return policies.deactivate_policy(session, policy_id=policy_id)
