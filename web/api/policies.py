"""SLA policies: the time limits of each clock and the escalation chain."""

from __future__ import annotations

from fastapi import APIRouter

from dispatch import policies
from dispatch.models import SlaPolicy
from dispatch.policies import SlaPolicyCreate, SlaPolicyUpdate
from web.api import examples as ex
from web.deps import Admin, CurrentUser, PathId, SessionDep, patch_body
from web.errors import ERROR_RESPONSES, error_responses

router = APIRouter(prefix="/sla-policies", tags=["sla-policies"], responses=ERROR_RESPONSES)


@router.get(
    "",
    response_model=list[SlaPolicy],
    summary="List the SLA policies",
)
def list_policies(
    session: SessionDep, _: CurrentUser, active_only: bool = False
) -> list[SlaPolicy]:
    """Every time-limit policy (签收, 答复, 办结 limits and escalation chain)."""
    return policies.list_policies(session, active_only=active_only)


@router.get(
    "/{policy_id}",
    response_model=SlaPolicy,
    summary="Read an SLA policy",
    responses=error_responses({404: "no such policy"}),
)
def get_policy(policy_id: PathId, session: SessionDep, _: CurrentUser) -> SlaPolicy:
    """One time-limit policy."""
    return policies.get_policy(session, policy_id=policy_id)


@router.post(
    "",
    status_code=201,
    response_model=SlaPolicy,
    summary="Create an SLA policy",
    responses=error_responses(
        {
            403: "only administrators manage policies",
            409: "a policy with this name exists",
            422: "a limit, the chain or a selector is invalid",
        }
    ),
    openapi_extra=ex.body(utilities=ex.POLICY_CREATE),
)
def create_policy(data: SlaPolicyCreate, session: SessionDep, _: Admin) -> SlaPolicy:
    """A new time-limit policy; it applies to dispatches from now on that it matches most
    specifically, or that a rule or a dispatcher names."""
    return policies.create_policy(session, data=data)


@router.patch(
    "/{policy_id}",
    response_model=SlaPolicy,
    summary="Change an SLA policy",
    responses=error_responses(
        {
            403: "only administrators manage policies",
            404: "no such policy",
            409: "the fallback policy `general` keeps its name and stays active",
            422: "a field is invalid or set to null",
        }
    ),
    openapi_extra=ex.body(close_limit=ex.POLICY_UPDATE),
)
def update_policy(
    policy_id: PathId, data: SlaPolicyUpdate, session: SessionDep, _: Admin
) -> SlaPolicy:
    """New deadlines apply to dispatches from now on; running clocks keep theirs."""
    return policies.update_policy(session, policy_id=policy_id, changes=patch_body(data, SlaPolicy))


@router.delete(
    "/{policy_id}",
    response_model=SlaPolicy,
    summary="Deactivate an SLA policy",
    responses=error_responses(
        {
            403: "only administrators manage policies",
            404: "no such policy",
            409: "the fallback policy `general` stays active",
        }
    ),
)
def deactivate_policy(policy_id: PathId, session: SessionDep, _: Admin) -> SlaPolicy:
    """Deactivates: assignments keep pointing at the policy that set their deadlines."""
    return policies.deactivate_policy(session, policy_id=policy_id)
