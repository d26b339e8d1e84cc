"""The calls behind a call figure (接通率, 15/30-second 接通率, 放弃率): the dashboard's call
numbers link here, as its ticket cards link to /figures/tickets. Centre staff only — calls
belong to no unit — and the caller's number is masked. The list exports as CSV/XLSX
(table ``call_list``, hotline.figures.export)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from hotline.figures import call_drill, export
from web.deps import ClockDep, SessionDep, SettingsDep
from web.pages.figures_common import (
    WATCHING,
    BadFilter,
    export_links,
    guarded,
    page_context,
    page_number,
    refused,
)
from web.pages.i18n import N_, _
from web.pages.people import Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)

CALL_LABELS = {
    "answer_rate": N_("Answer rate"),
    "within_15s": N_("Answered within 15 s"),
    "within_30s": N_("Answered within 30 s"),
    "abandon_rate": N_("Abandon rate"),
}
# What a list holds, in the words of the people who read it (not "numerator").
PART_LABELS = {
    "answer_rate": N_("answered by an operator"),
    "within_15s": N_("answered within 15 s"),
    "within_30s": N_("answered within 30 s"),
    "abandon_rate": N_("hung up while waiting (short abandons left out)"),
}
COUNTED = N_("calls counted (short abandons left out)")
OUTCOMES = {
    "agent": N_("an operator answered"),
    "robot": N_("the voice robot took it"),
    "overflowed": N_("overflowed to the robot"),
    "callback_requested": N_("asked for a callback"),
    "abandoned": N_("hung up waiting"),
    "refused": N_("not queued"),
    "lost": N_("lost by the platform"),
}
PAGE_SIZE = 50


@router.get("/figures/calls")
def calls_behind(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
    person: Person = WATCHING,
) -> Response:
    chosen = guarded(request, session, settings, clock, person, "calls")
    if isinstance(chosen, Response):
        return chosen
    q = request.query_params
    name, part = q.get("figure", ""), q.get("part", "numerator")
    if name not in call_drill.CALL_FIGURES:
        return refused(request, session, BadFilter("figure", N_("no such figure")), "calls", person)
    if part not in export.PARTS:
        problem = BadFilter("part", N_("part is numerator or denominator"))
        return refused(request, session, problem, "calls", person)
    page = page_number(request)
    f = call_drill.figure(session, chosen.ask, name)
    ids = f.numerator_ids if part == "numerator" else f.denominator_ids
    rows, total = call_drill.calls(session, ids, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    context = {
        **page_context(request, session, person, chosen, "calls"),
        "figure_label": _(CALL_LABELS[name]),
        "part": part,
        "part_label": _(PART_LABELS[name] if part == "numerator" else COUNTED),
        "count": f.numerator if part == "numerator" else f.denominator,
        "rows": rows,
        "total": total,
        "page": page,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "page_query": chosen.query(figure=name, part=part),
        "outcomes": OUTCOMES,
        "call_exports": export_links(chosen, "call_list", figure=name, part=part),
    }
    return render(request, "figures/calls.html", context)
