"""Dispatch rules (派单目录 as data): read and try them out; the administrator edits them,
one by one or as packs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from dispatch import rulebook
from dispatch.models import Rule
from dispatch.rule_matching import TicketFacts
from dispatch.rule_specs import Actions, Conditions, RuleSpec
from tickets.models import Channel, RequestType, Urgency
from web.api import examples as ex
from web.deps import Admin, ClockDep, IntakeStaff, IsoTime, PathId, SessionDep, patch_body
from web.errors import ERROR_RESPONSES, error_responses

router = APIRouter(prefix="/rules", tags=["rules"], responses=ERROR_RESPONSES)

PackFormat = Literal["yaml", "json"]
PACK_MEDIA_TYPES = {"yaml": "application/yaml", "json": "application/json"}


class RuleCreate(RuleSpec):
    pack: str = Field(default="custom", min_length=1, max_length=64)


class RuleUpdate(BaseModel):
    """The top-level fields to replace; `conditions` and `actions` are replaced whole."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=120)
    priority: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)
    enabled: StrictBool | None = None
    description: str | None = Field(default=None, max_length=1000)
    conditions: Conditions | None = None
    actions: Actions | None = None


class DryRunBody(BaseModel):
    """The facts a rule looks at, as a ticket would present them."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(
        min_length=1,
        max_length=20000,
        description="title, description and request, as the caller put them",
    )
    request_type: RequestType | None = None
    urgency: Urgency | None = None
    district: str | None = Field(default=None, max_length=64)
    channel: Channel | None = None
    local_time: IsoTime | None = Field(default=None, description="intake time, centre's zone")


class PackImport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=2_000_000)
    format: PackFormat = "yaml"
    replace: StrictBool = Field(
        default=False, description="delete the pack's rules missing from the text"
    )


@router.get(
    "",
    response_model=list[Rule],
    summary="List the dispatch rules",
    responses=error_responses({403: "a unit's handler may not read the rules"}),
)
def list_rules(session: SessionDep, _: IntakeStaff, pack: str | None = None) -> list[Rule]:
    """In evaluation order (priority, then name), disabled rules included."""
    return rulebook.list_rules(session, pack=pack)


@router.post(
    "/dry-run",
    summary="Try the rules on a ticket's text",
    responses=error_responses(
        {403: "a unit's handler may not try the rules", 422: "a field is invalid"}
    ),
    openapi_extra=ex.body(gas=ex.DRY_RUN),
)
def dry_run(body: DryRunBody, session: SessionDep, _: IntakeStaff) -> dict[str, Any]:
    """Which rule would fire for such a ticket, and why; nothing is created."""
    return dict(rulebook.dry_run(session, facts=TicketFacts(**body.model_dump())))


@router.get(
    "/export",
    response_class=Response,
    responses={
        **error_responses(
            {403: "a unit's handler may not read the rules", 422: "an unknown format"}
        ),
        200: {"content": {t: {} for t in PACK_MEDIA_TYPES.values()}},
    },
    summary="Export a rule pack",
)
def export_pack(
    session: SessionDep,
    _: IntakeStaff,
    pack: str | None = None,
    fmt: Annotated[PackFormat, Query(alias="format")] = "yaml",
) -> Response:
    """A pack that POST /rules/import reads back; every rule when no pack is named."""
    return Response(
        rulebook.export_pack(session, pack=pack, fmt=fmt), media_type=PACK_MEDIA_TYPES[fmt]
    )


@router.post(
    "/import",
    summary="Import a rule pack",
    responses=error_responses(
        {
            403: "only administrators edit the rules",
            422: "the pack does not parse, or a rule in it is invalid (all problems listed)",
        }
    ),
    openapi_extra=ex.body(yaml=ex.PACK_IMPORT),
)
def import_pack(body: PackImport, session: SessionDep, _: Admin, clock: ClockDep) -> dict[str, int]:
    """All or nothing: every problem in the pack is reported and nothing is written."""
    return rulebook.import_pack(
        session, text=body.text, fmt=body.format, now=clock.now(), replace=body.replace
    )


@router.get(
    "/{rule_id}",
    response_model=Rule,
    summary="Read a dispatch rule",
    responses=error_responses(
        {403: "a unit's handler may not read the rules", 404: "no such rule"}
    ),
)
def get_rule(rule_id: PathId, session: SessionDep, _: IntakeStaff) -> Rule:
    """One rule: its conditions, actions, priority and pack."""
    return rulebook.get_rule(session, rule_id=rule_id)


@router.post(
    "",
    status_code=201,
    response_model=Rule,
    summary="Create a dispatch rule",
    responses=error_responses(
        {
            403: "only administrators edit the rules",
            409: "a rule with this name exists",
            422: "the conditions or actions are invalid, e.g. an unknown unit",
        }
    ),
    openapi_extra=ex.body(stray_dogs=ex.RULE_CREATE),
)
def create_rule(body: RuleCreate, session: SessionDep, _: Admin, clock: ClockDep) -> Rule:
    """A new rule, effective for the next ticket. Lower priority is tried first; the first rule
    whose conditions all hold classifies and routes the ticket."""
    return rulebook.create_rule(session, data=body.to_data(), pack=body.pack, now=clock.now())


@router.patch(
    "/{rule_id}",
    response_model=Rule,
    summary="Change a dispatch rule",
    responses=error_responses(
        {
            403: "only administrators edit the rules",
            404: "no such rule",
            409: "another rule has the new name",
            422: "a field is invalid or set to null",
        }
    ),
    openapi_extra=ex.body(disable=ex.RULE_UPDATE),
)
def update_rule(
    rule_id: PathId, body: RuleUpdate, session: SessionDep, _: Admin, clock: ClockDep
) -> Rule:
    """Only the fields sent change; `conditions` and `actions` are replaced whole."""
    return rulebook.update_rule(
        session,
        rule_id=rule_id,
        now=clock.now(),
        data=patch_body(body, Rule).model_dump(mode="json", exclude_unset=True),
    )


@router.delete(
    "/{rule_id}",
    status_code=204,
    summary="Delete a dispatch rule",
    responses=error_responses({403: "only administrators edit the rules", 404: "no such rule"}),
)
def delete_rule(rule_id: PathId, session: SessionDep, _: Admin) -> Response:
    """The rule is gone for the next ticket; tickets it routed keep their units."""
    rulebook.delete_rule(session, rule_id=rule_id)
    return Response(status_code=204)
