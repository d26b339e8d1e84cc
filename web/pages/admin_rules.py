"""Admin: the dispatch rules (派单目录) — list, edit with every refused field named beside it,
enable or disable — and a dry run on pasted text that shows which rule fires and why.

GET  /admin/rules                  the rules in evaluation order: filter, sort, page
GET  /admin/rules/dry-run          the dry-run form
POST /admin/rules/dry-run          which rule fires for the text, and the ranking of all that hold
GET  /admin/rules/{id}             a rule's form
POST /admin/rules/{id}             save it (validated whole by dispatch.rule_specs)
POST /admin/rules/{id}/enabled     enable or disable it

The ranking: ``CompiledRules.decide`` names the rule that fires (with its conditions, the
rules tried before it and up to three rivals routing elsewhere). To rank every rule that
holds, the dry run asks ``decide`` again without the rules already ranked, until none
fires: each row is then what would fire if the rows above it did not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import Response

from core.errors import NotFound
from dispatch import policies, rulebook
from dispatch import units as unit_service
from dispatch.models import Rule
from dispatch.rule_matching import CompiledRules, Explanation, RuleTrace, TicketFacts
from dispatch.rule_specs import RuleSpec
from dispatch.segment import default_synonyms
from tickets.models import Channel, RequestType, Urgency
from web.deps import MAX_ID, ClockDep, SessionDep
from web.pages.admin_common import ADMIN, POSTED, attempt, done, is_htmx, notice, words
from web.pages.i18n import N_, _
from web.pages.people import Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)

RULES_PAGE = 50
RANKING_CAP = 15
RULE_SORTS = {
    "priority": lambda r: (r.priority, r.name),
    "name": lambda r: r.name,
    "unit": lambda r: ((r.actions or {}).get("lead_unit") or "", r.priority),
    "updated": lambda r: r.updated_at,
}
REQUEST_TYPE_NAMES = {
    RequestType.consultation: N_("Consultation"),
    RequestType.help: N_("Request for help"),
    RequestType.complaint: N_("Complaint"),
    RequestType.report: N_("Report"),
    RequestType.suggestion: N_("Suggestion"),
    RequestType.praise: N_("Praise"),
}
URGENCY_NAMES = {
    Urgency.normal: N_("Normal"),
    Urgency.urgent: N_("Urgent"),
    Urgency.very_urgent: N_("Very urgent"),
}
CHANNEL_NAMES = {
    Channel.phone: N_("Phone"),
    Channel.web: N_("Web"),
    Channel.api: N_("API"),
    Channel.open311: N_("Open311"),
    Channel.walk_in: N_("Walk-in"),
}
# Why a rule did not hold (rule_matching's condition names).
CONDITION_NAMES = {
    "text_any": N_("any of the words"),
    "text_all": N_("all of the words"),
    "text_none": N_("none of the words"),
    "regex": N_("pattern"),
    "request_types": N_("request type"),
    "urgencies": N_("urgency"),
    "districts": N_("district"),
    "channels": N_("channel"),
    "time_of_day": N_("time of day"),
    "catch_all": N_("catch-all"),
}
# The details of a condition's outcome (rule_matching's keys).
DETAIL_NAMES = {
    "hit": N_("found"),
    "missing": N_("missing"),
    "pattern": N_("pattern"),
    "matched": N_("matched"),
    "expected": N_("expected"),
    "actual": N_("actual"),
}
# rule_specs' and rulebook's refusals, as message ids where they are fixed words.
RULE_MESSAGES = (
    N_("unknown field"),
    N_(
        "a rule without conditions would match every ticket; "
        "set catch_all: true if that is what you mean"
    ),
    N_("a rule needs at least one action"),
    N_("co-handling units need a lead_unit"),
    N_("start and end must differ (an empty window never matches)"),
)


# The refusals that name what was given, as (pattern, message id with its placeholders).
WORDED = (
    (
        re.compile(r"invalid regular expression (?P<pattern>.+?): (?P<why>.+)"),
        N_("not a valid regular expression: %(pattern)s (%(why)s)"),
    ),
    (re.compile(r'unknown unit "(?P<code>.+)"'), N_("no unit has the code %(code)s")),
    (re.compile(r'unit "(?P<code>.+)" is inactive'), N_("unit %(code)s is inactive")),
    (
        re.compile(r'(unknown|inactive) SLA policy "(?P<name>.+)"'),
        N_("no active SLA policy is named %(name)s"),
    ),
    (re.compile(r"unit codes are .*"), N_("unit codes are 1–32 letters, digits, '_', '-' or '.'")),
    (re.compile(r"category codes are .*"), N_("category codes are 2–12 digits (GB/T 39666)")),
    (re.compile(r"(expected a time as|write times as) .*"), N_("a time as HH:MM, e.g. 22:00")),
    (re.compile(r"listed more than once: (?P<codes>.+)"), N_("listed more than once: %(codes)s")),
    (
        re.compile(r"the lead unit (?P<code>.+) cannot also co-handle"),
        N_("the lead unit %(code)s cannot also co-handle"),
    ),
)


def rule_words(message: str) -> str:
    """A refusal of rule_specs or the rule book in the person's language."""
    for pattern, worded in WORDED:
        found = pattern.fullmatch(message)
        if found:
            return _(worded, **{k: v for k, v in found.groupdict().items() if v is not None})
    return _(message)


def _lines(value: str) -> list[str]:
    return [line.strip() for line in re.split(r"[\r\n]+", value) if line.strip()]


def _words(value: str) -> list[str]:
    return [w for w in re.split(r"[\s,，、;；]+", value) if w]


def _field_key(path: str) -> str:
    """``conditions.regex[1]`` → ``conditions.regex``: the form field a problem belongs to."""
    return re.sub(r"\[\d+\].*$", "", path).removesuffix(".start").removesuffix(".end")


def _form_of(rule: Rule) -> dict[str, Any]:
    c, a = rule.conditions or {}, rule.actions or {}
    window = c.get("time_of_day") or {}
    return {
        "name": rule.name,
        "priority": str(rule.priority),
        "description": rule.description or "",
        "text_any": "\n".join(c.get("text_any", [])),
        "text_all": "\n".join(c.get("text_all", [])),
        "text_none": "\n".join(c.get("text_none", [])),
        "regex": "\n".join(c.get("regex", [])),
        "districts": "\n".join(c.get("districts", [])),
        "request_types": list(c.get("request_types", [])),
        "urgencies": list(c.get("urgencies", [])),
        "channels": list(c.get("channels", [])),
        "time_start": window.get("start", ""),
        "time_end": window.get("end", ""),
        "catch_all": bool(c.get("catch_all")),
        "category_code": a.get("category_code") or "",
        "category_name": a.get("category_name") or "",
        "lead_unit": a.get("lead_unit") or "",
        "co_units": " ".join(a.get("co_units", [])),
        "urgency": a.get("urgency") or "",
        "request_type": a.get("request_type") or "",
        "sla_policy": a.get("sla_policy") or "",
    }


def _definition(form: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The form as rule_specs reads a rule, and the problems found before it looks."""
    problems: dict[str, str] = {}
    try:
        priority: Any = int(form["priority"])
    except ValueError:
        priority = form["priority"]
        problems["priority"] = _("A whole number; lower runs first.")
    conditions: dict[str, Any] = {
        key: _lines(form[key]) for key in ("text_any", "text_all", "text_none", "regex")
    }
    conditions["districts"] = _lines(form["districts"])
    for key in ("request_types", "urgencies", "channels"):
        conditions[key] = form[key]
    if form["time_start"] or form["time_end"]:
        conditions["time_of_day"] = {"start": form["time_start"], "end": form["time_end"]}
    if form["catch_all"]:
        conditions["catch_all"] = True
    actions: dict[str, Any] = {
        key: form[key].strip() or None
        for key in (
            "category_code",
            "category_name",
            "lead_unit",
            "urgency",
            "request_type",
            "sla_policy",
        )
    }
    actions["co_units"] = _words(form["co_units"])
    data = {
        "name": form["name"].strip(),
        "priority": priority,
        "description": form["description"].strip() or None,
        "conditions": {k: v for k, v in conditions.items() if v not in ([], None)},
        "actions": {k: v for k, v in actions.items() if v not in ([], None)},
    }
    return data, problems


# ---------------------------------------------------------------- the list


@router.get("/admin/rules")
def rules_page(
    request: Request,
    session: SessionDep,
    person: Person = ADMIN,
    q: Annotated[str, Query(max_length=100)] = "",
    state: Annotated[str, Query(max_length=16)] = "",
    unit: Annotated[str, Query(max_length=32)] = "",
    sort: Annotated[str, Query(max_length=16)] = "priority",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    rules = rulebook.list_rules(session)
    q = q.strip()
    if q:
        rules = [r for r in rules if q.lower() in r.name.lower() or q in (r.description or "")]
    if state in ("enabled", "disabled"):
        rules = [r for r in rules if r.enabled == (state == "enabled")]
    if unit:
        rules = [r for r in rules if (r.actions or {}).get("lead_unit") == unit]
    key = sort.lstrip("-")
    rules.sort(key=RULE_SORTS.get(key, RULE_SORTS["priority"]), reverse=sort.startswith("-"))
    pages = max(1, -(-len(rules) // RULES_PAGE))
    page = min(page, pages)
    units = unit_service.list_units(session)
    context = {
        "rules": rules[(page - 1) * RULES_PAGE : page * RULES_PAGE],
        "total": len(rules),
        "units": units,
        "unit_names": {u.code: u.name for u in units},
        "filters": {"q": q, "state": state, "unit": unit},
        "sort": sort,
        "page": page,
        "pages": pages,
        "notice": notice(request),
    }
    block = "results" if is_htmx(request) else None
    return render(request, "admin/rules.html", context, block=block)


# ---------------------------------------------------------------- the dry run


@dataclass(frozen=True)
class Ranked:
    spec: RuleSpec
    trace: RuleTrace
    confidence: float | None
    evidence: str | None
    wording: list[str]


def rank(session: Any, facts: TicketFacts) -> tuple[Explanation, list[Ranked]]:
    """What fires, and every rule that holds in the order they would fire (at most
    RANKING_CAP), each one asked of the rules without those above it."""
    compiled = rulebook.compiled_rules(session)
    explanation = compiled.explain(facts)
    ranked: list[Ranked] = []
    remaining = compiled.specs
    synonyms = default_synonyms()
    while remaining and len(ranked) < RANKING_CAP and explanation["fired"] is not None:
        match, why = CompiledRules.build(remaining, synonyms).decide(facts)
        if match is None or why["fired"] is None:
            break
        ranked.append(
            Ranked(match.rule, why["fired"], why["confidence"], why["evidence"], why["wording"])
        )
        remaining = [s for s in remaining if s.name != match.rule.name]
    return explanation, ranked


def _dry_run_page(
    request: Request,
    session: Any,
    *,
    text: str = "",
    district: str = "",
    request_type: str = "",
    result: dict[str, Any] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    units = unit_service.list_units(session)
    rule_ids = {r.name: r.id for r in rulebook.list_rules(session)}
    context = {
        "text": text,
        "district": district,
        "request_type": request_type,
        "request_types": REQUEST_TYPE_NAMES,
        "condition_names": CONDITION_NAMES,
        "detail_names": DETAIL_NAMES,
        "districts": sorted({u.district for u in units if u.district}),
        "unit_names": {u.code: u.name for u in units},
        "rule_ids": rule_ids,
        "result": result,
        "error": error,
    }
    block = "result" if is_htmx(request) else None
    return render(request, "admin/dry_run.html", context, status_code=status, block=block)


@router.get("/admin/rules/dry-run")
def dry_run_form(request: Request, session: SessionDep, person: Person = ADMIN) -> Response:
    return _dry_run_page(request, session)


@router.post("/admin/rules/dry-run", dependencies=POSTED)
def dry_run(
    request: Request,
    session: SessionDep,
    person: Person = ADMIN,
    text: Annotated[str, Form(max_length=20000)] = "",
    district: Annotated[str, Form(max_length=64)] = "",
    request_type: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    if not text.strip():
        return _dry_run_page(
            request,
            session,
            district=district,
            request_type=request_type,
            error=_("Paste the caller's words first."),
            status=422,
        )
    chosen = RequestType(request_type) if request_type in RequestType.__members__ else None
    facts = TicketFacts(text=text, district=district.strip() or None, request_type=chosen)
    explanation, ranked = rank(session, facts)
    return _dry_run_page(
        request,
        session,
        text=text,
        district=district,
        request_type=request_type,
        result={"explanation": explanation, "ranked": ranked},
    )


# ---------------------------------------------------------------- one rule


def _rule(session: Any, rule_id: int) -> Rule:
    if not 1 <= rule_id <= MAX_ID:
        raise NotFound(f"no rule with id {rule_id}", rule_id=rule_id)
    return rulebook.get_rule(session, rule_id=rule_id)


def _rule_page(
    request: Request,
    session: Any,
    rule: Rule,
    *,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    context = {
        "rule": rule,
        "form": form or _form_of(rule),
        "errors": errors or {},
        "error": error,
        "notice": notice(request),
        "units": unit_service.list_units(session, active_only=True),
        "policies": policies.list_policies(session, active_only=True),
        "request_types": REQUEST_TYPE_NAMES,
        "urgencies": URGENCY_NAMES,
        "channels": CHANNEL_NAMES,
    }
    return render(request, "admin/rule.html", context, status_code=status)


@router.get("/admin/rules/{rule_id}")
def rule_page(
    rule_id: int, request: Request, session: SessionDep, person: Person = ADMIN
) -> Response:
    return _rule_page(request, session, _rule(session, rule_id))


Lines = Annotated[str, Form(max_length=20000)]
Short = Annotated[str, Form(max_length=1000)]
Many = Annotated[list[str], Form(max_length=20)]


@router.post("/admin/rules/{rule_id}", dependencies=POSTED)
def update_rule(
    rule_id: int,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    person: Person = ADMIN,
    name: Short = "",
    priority: Short = "",
    description: Short = "",
    text_any: Lines = "",
    text_all: Lines = "",
    text_none: Lines = "",
    regex: Lines = "",
    districts: Lines = "",
    request_types: Many = [],  # noqa: B006 (FastAPI copies defaults)
    urgencies: Many = [],  # noqa: B006
    channels: Many = [],  # noqa: B006
    time_start: Short = "",
    time_end: Short = "",
    catch_all: Short = "",
    category_code: Short = "",
    category_name: Short = "",
    lead_unit: Short = "",
    co_units: Short = "",
    urgency: Short = "",
    request_type: Short = "",
    sla_policy: Short = "",
) -> Response:
    rule = _rule(session, rule_id)
    form = {
        "name": name,
        "priority": priority.strip(),
        "description": description,
        "text_any": text_any,
        "text_all": text_all,
        "text_none": text_none,
        "regex": regex,
        "districts": districts,
        "request_types": request_types,
        "urgencies": urgencies,
        "channels": channels,
        "time_start": time_start.strip(),
        "time_end": time_end.strip(),
        "catch_all": bool(catch_all),
        "category_code": category_code,
        "category_name": category_name,
        "lead_unit": lead_unit.strip(),
        "co_units": co_units,
        "urgency": urgency,
        "request_type": request_type,
        "sla_policy": sla_policy,
    }
    data, problems = _definition(form)
    if problems:
        return _rule_page(request, session, rule, form=form, errors=problems, status=422)
    _result, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: rulebook.update_rule(session, rule_id=rule_id, data=data, now=clock.now()),
        action="admin.rule.update",
        target=f"rule:{rule_id}",
    )
    if refused is not None:
        session.refresh(rule)
        errors: dict[str, str] = {}
        for problem in refused.details.get("errors") or []:
            key = _field_key(str(problem.get("field", "rule")))
            message = rule_words(str(problem.get("message", "")))
            errors[key] = f"{errors[key]}; {message}" if key in errors else message
        return _rule_page(
            request,
            session,
            rule,
            form=form,
            errors=errors,
            error=None if errors else words(refused),
            status=422,
        )
    return done(f"/admin/rules/{rule_id}", "rule_saved")


@router.post("/admin/rules/{rule_id}/enabled", dependencies=POSTED)
def enable_rule(
    rule_id: int,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    person: Person = ADMIN,
    enabled: Short = "",
    back: Short = "",
) -> Response:
    rule = _rule(session, rule_id)
    on = enabled == "1"
    _result, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: rulebook.update_rule(
            session, rule_id=rule_id, data={"enabled": on}, now=clock.now()
        ),
        action="admin.rule.enable",
        target=f"rule:{rule_id}",
        detail={"enabled": on},
    )
    if refused is not None:
        session.refresh(rule)
        return _rule_page(request, session, rule, error=words(refused), status=422)
    target = "/admin/rules" if back == "list" else f"/admin/rules/{rule_id}"
    return done(target, "rule_enabled" if on else "rule_disabled")
