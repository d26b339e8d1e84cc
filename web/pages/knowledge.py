"""The knowledge base (知识库) in the browser: search and browse the articles, read one with
its versions, write and edit drafts (units for their own domain), the centre's review,
the "did not answer" feedback a unit works through, and the dashboard.

    GET  /knowledge                      search (q) or list; filters category, unit, status
    GET  /knowledge/new                  a new draft's form          POST: create it
    GET  /knowledge/review               the centre's review queue
    GET  /knowledge/feedback             feedback on the unit's articles (handled=1: done)
    POST /knowledge/feedback/{id}/handled
    GET  /knowledge/dashboard            used, going stale, feedback open, missing (days=)
    GET  /knowledge/{id}                 the article (version=N: that version and its diff)
    GET  /knowledge/{id}/edit            the edit form               POST: save a version
    POST /knowledge/{id}/submit | approve | send-back | retire

Who may do what is the domain's (hotline/knowledge/lifecycle.py); these pages only show the
buttons a person may use and turn a refusal into words. Every post is CSRF-checked and
audited (a refusal too), and a refused form comes back with everything typed in it."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse
from markdown_it import MarkdownIt
from markupsafe import Markup
from pydantic import ValidationError
from sqlmodel import Session
from starlette.responses import Response

from accounts.models import Role, User
from core.clock import Clock
from core.errors import Conflict, DomainError, Forbidden, IllegalTransition, NotFound
from dispatch import units as unit_service
from hotline.knowledge import reports, service
from hotline.knowledge.lifecycle import CENTRE_APPROVERS, CENTRE_EDITORS, may_write
from hotline.knowledge.models import (
    CATEGORY_CODE,
    ArticleStatus,
    KnowledgeArticleCreate,
    KnowledgeArticleUpdate,
)
from hotline.knowledge.search import make_index
from web.deps import ClockDep, SessionDep
from web.pages import nav
from web.pages.admin_common import attempt
from web.pages.i18n import N_, _
from web.pages.nav import NavItem
from web.pages.people import NotAllowed, Person, csrf_form, require
from web.pages.templating import render

router = APIRouter(include_in_schema=False)
POSTED = [Depends(csrf_form)]
ANYONE = require(*Role)
WRITERS = frozenset(CENTRE_EDITORS | {Role.handler})
WRITER = require(*WRITERS)
APPROVER = require(*CENTRE_APPROVERS)

Field = Annotated[str, Form(max_length=2000)]
Body = Annotated[str, Form(max_length=200_000)]  # the model's limit is checked with the form kept


def _waiting(session: Session, person: Person, now: datetime) -> int:
    """The centre's reviewers: articles waiting for review; a unit: its open feedback."""
    if person.role in CENTRE_APPROVERS:
        return reports.review_count(session)
    if person.role == Role.handler:
        return reports.open_feedback_count(session, user=person.user)
    return 0


nav.register(NavItem("/knowledge", N_("Knowledge base"), frozenset(Role), order=40, count=_waiting))

STATUS_NAMES = {
    ArticleStatus.draft: N_("Draft"),
    ArticleStatus.in_review: N_("In review"),
    ArticleStatus.published: N_("Published"),
    ArticleStatus.retired: N_("Retired"),
}
FIELD_NAMES = {
    "title": N_("Title"),
    "body": N_("Answer"),
    "category_code": N_("Category code"),
    "owner_unit_id": N_("Responsible unit"),
    "policy_source": N_("Policy basis"),
    "document_number": N_("Document number"),
    "region": N_("Region"),
    "valid_from": N_("Valid from"),
    "valid_until": N_("Valid through"),
    "review_due": N_("Review due"),
}
MATCH_KINDS = {
    "word": N_("same word"),
    "synonym": N_("synonym"),
    "pinyin": N_("same sound"),
    "fuzzy": N_("near spelling"),
}
NOTICES = {
    "created": N_("Draft saved."),
    "saved": N_("New version saved."),
    "submitted": N_("Submitted to the centre for review."),
    "approved": N_("Approved: this version is now in service and searchable."),
    "sent_back": N_("Sent back to the unit with your reason."),
    "retired": N_("Retired: the article no longer appears in search."),
    "handled": N_("Feedback marked as handled."),
}
# Raw HTML off: what an editor types cannot carry markup or script into the page; links
# (including javascript: ones, which markdown-it refuses) are Markdown links.
MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def render_markdown(text: str) -> Markup:
    # Safe to mark: with html off, markdown-it escapes every tag the text holds.
    return Markup(MARKDOWN.render(text))


def _notice(request: Request) -> str | None:
    key = request.query_params.get("done")
    return _(NOTICES[key]) if key in NOTICES else None


def _done(path: str, key: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?done={key}", status_code=303)


def _refused(exc: DomainError) -> str:
    """A refusal of the knowledge service in the reader's words."""
    if isinstance(exc, IllegalTransition):
        return _(
            "This step is not possible while the article is “%(status)s”.", status=_status(exc)
        )
    if isinstance(exc, Conflict):
        return _("This step is no longer possible: the article has changed. Reload the page.")
    if isinstance(exc, Forbidden):
        return _("Your role may not do this to this article.")
    if "nothing changed" in exc.message:
        return _("Nothing changed: edit a field before saving.")
    if "reason is required" in exc.message:
        return _("Give a reason.")
    if "no active unit" in exc.message:
        return _("Choose an active unit.")
    return _("Not accepted: %(detail)s", detail=exc.message)


def _status(exc: DomainError) -> str:
    value = exc.details.get("status")
    return _(STATUS_NAMES[ArticleStatus(value)]) if value in set(ArticleStatus) else str(value)


def _tabs(person: Person) -> list[tuple[str, str]]:
    tabs = [("/knowledge", _("Articles"))]
    if person.role in WRITERS:
        tabs.append(("/knowledge/new", _("New article")))
    if person.role in CENTRE_APPROVERS:
        tabs.append(("/knowledge/review", _("Review")))
    if person.role in WRITERS:
        tabs += [
            ("/knowledge/feedback", _("Not-answered feedback")),
            ("/knowledge/dashboard", _("Dashboard")),
        ]
    return tabs


def _base(request: Request, person: Person, current: str) -> dict[str, Any]:
    return {
        "kb_tabs": _tabs(person),
        "current": current,
        "notice": _notice(request),
        "error": None,
        "status_names": STATUS_NAMES,
        "field_names": FIELD_NAMES,
        # "valid until" is the first moment no longer valid; people read the last valid day
        "last_day": lambda v: v - timedelta(microseconds=1) if v else None,
    }


def _units(session: Session) -> list[Any]:
    return unit_service.list_units(session, active_only=True)


# ---------------------------------------------------------------- search and list


@router.get("/knowledge")
def articles(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    person: Person = ANYONE,
    q: str = "",
    category: str = "",
    unit: str = "",
    status: str = "",
) -> Response:
    q, category = q.strip()[:200], category.strip()[:6]
    unit_id = _small_id(unit)
    chosen = ArticleStatus(status) if status in set(ArticleStatus) else None
    if person.role not in WRITERS:
        chosen = None  # readers see what is in service only
    context = _base(request, person, "/knowledge")
    hits: list[dict[str, Any]] | None = None
    rows: list[reports.ArticleRow] = []
    if q:
        hits = _search(session, clock, person.user, q, category=category, unit_id=unit_id)
    else:
        rows = reports.list_articles(
            session, user=person.user, category=category, owner_unit_id=unit_id, status=chosen
        )
    context.update(
        q=q,
        category=category,
        unit=unit_id,
        status=chosen.value if chosen else "",
        units=_units(session),
        hits=hits,
        rows=rows,
        may_filter_status=person.role in WRITERS,
        match_kinds=MATCH_KINDS,
    )
    return render(request, "knowledge/list.html", context)


def _search(
    session: Session, clock: Clock, user: User, q: str, *, category: str, unit_id: int | None
) -> list[dict[str, Any]]:
    """Search hits (only versions in service at this moment) with their owner and category,
    filtered as the list is."""
    found = make_index(session).search(q, now=clock.now(), limit=30)
    shown = {
        r.id: r
        for r in reports.list_articles(
            session,
            user=user,
            owner_unit_id=unit_id,
            category=category or None,
            ids={h.article_id for h in found},
        )
    }
    texts = reports.excerpts(
        session, versions=[(h.article_id, h.version) for h in found if h.article_id in shown]
    )
    return [
        {"hit": hit, "row": shown[hit.article_id], "excerpt": texts.get(hit.article_id, "")}
        for hit in found
        if hit.article_id in shown
    ]


# ---------------------------------------------------------------- the forms


def _small_id(value: str) -> int | None:
    """An id typed or posted: ASCII digits that fit the column, else None."""
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None


def _local_date(value: str, zone: ZoneInfo) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    return datetime.combine(date.fromisoformat(value), time(), tzinfo=zone)


def _form_values(
    title: str,
    body: str,
    category_code: str,
    owner_unit_id: str,
    policy_source: str,
    document_number: str,
    region: str,
    valid_from: str,
    valid_until: str,
    review_due: str,
    note: str,
) -> dict[str, str]:
    return {
        "title": title,
        "body": body,
        "category_code": category_code.strip(),
        "owner_unit_id": owner_unit_id.strip(),
        "policy_source": policy_source,
        "document_number": document_number,
        "region": region,
        "valid_from": valid_from.strip(),
        "valid_until": valid_until.strip(),
        "review_due": review_due.strip(),
        "note": note,
    }


def _parse(form: dict[str, str], zone: ZoneInfo) -> tuple[dict[str, Any], dict[str, str]]:
    """The form as the model's fields, and what is wrong with it by field (in words). Dates
    are days in the centre's time zone; "valid through" is the last valid day, stored as
    the first moment after it."""
    errors: dict[str, str] = {}
    data: dict[str, Any] = {}
    for name in ("title", "body"):
        if not form[name].strip():
            errors[name] = _("Required.")
        data[name] = form[name].strip()
    if len(data["title"]) > 200:
        errors["title"] = _("At most %(n)s characters.", n=200)
    if len(data["body"]) > 100_000:
        errors["body"] = _("At most %(n)s characters.", n=100_000)
    if not CATEGORY_CODE.match(form["category_code"]):
        errors["category_code"] = _("2, 4 or 6 digits of the GB/T 39666 category, e.g. 0203.")
    data["category_code"] = form["category_code"]
    owner = _small_id(form["owner_unit_id"])
    if owner is None:
        errors["owner_unit_id"] = _("Choose a unit.")
    else:
        data["owner_unit_id"] = owner
    for name, limit in (("policy_source", 200), ("document_number", 100), ("region", 64)):
        value = form[name].strip()
        if len(value) > limit:
            errors[name] = _("At most %(n)s characters.", n=limit)
        data[name] = value or None
    for name in ("valid_from", "valid_until", "review_due"):
        try:
            data[name] = _local_date(form[name], zone)
        except ValueError:
            errors[name] = _("A date such as 2026-12-31.")
    if data.get("valid_until") is not None:
        data["valid_until"] += timedelta(days=1)
    start, end = data.get("valid_from"), data.get("valid_until")
    if start is not None and end is not None and end <= start:
        errors["valid_until"] = _("The last valid day cannot come before the first.")
    if len(form["note"]) > 1000:
        errors["note"] = _("At most %(n)s characters.", n=1000)
    return data, errors


def _form_from_article(article: Any, zone: ZoneInfo) -> dict[str, str]:
    def day(value: datetime | None, *, last: bool = False) -> str:
        if value is None:
            return ""
        moment = value - timedelta(microseconds=1) if last else value
        return moment.astimezone(zone).date().isoformat()

    return {
        "title": article.title,
        "body": article.body,
        "category_code": article.category_code,
        "owner_unit_id": str(article.owner_unit_id),
        "policy_source": article.policy_source or "",
        "document_number": article.document_number or "",
        "region": article.region or "",
        "valid_from": day(article.valid_from),
        "valid_until": day(article.valid_until, last=True),
        "review_due": day(article.review_due),
        "note": "",
    }


def _zone(request: Request) -> ZoneInfo:
    return ZoneInfo(request.app.state.settings.timezone)


def _merge(
    session: Session,
    person: Person,
    article: Any,
    form: dict[str, str],
    started_from: int,
    request: Request,
) -> tuple[dict[str, str], list[str], list[str]]:
    """The typed form after a conflicting save: each field the editor left as it was in the
    version they started from takes the current value; returns the form, the fields taken
    from the other save, and the fields both changed (the editor's text is kept there)."""
    zone = _zone(request)
    try:
        base = _form_from_article(
            service.article_version(
                session, user=person.user, article_id=article.id, version=started_from
            ),
            zone,
        )
    except NotFound:
        return form, [], []
    current = _form_from_article(article, zone)
    merged, theirs, both = dict(form), [], []
    for name in FIELD_NAMES:
        if current[name] == base[name]:
            continue  # only the editor changed it (or nobody)
        if _same(form[name], base[name]):
            merged[name] = current[name]
            theirs.append(name)
        elif not _same(form[name], current[name]):
            both.append(name)
    return merged, theirs, both


def _same(a: str, b: str) -> bool:
    return a.strip().replace("\r\n", "\n") == b.strip().replace("\r\n", "\n")


def _form_page(
    request: Request,
    session: Session,
    person: Person,
    *,
    form: dict[str, str],
    article: Any = None,
    expected_version: int | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    conflict: int | None = None,
    merged: list[str] | None = None,
    status: int = 200,
) -> Response:
    units = _units(session)
    if person.role == Role.handler:
        units = [u for u in units if u.id == person.user.unit_id]
    context = _base(request, person, "/knowledge/new" if article is None else "")
    context.update(
        form=form,
        article=article,
        expected_version=expected_version,
        errors=errors or {},
        error=error,
        conflict=conflict,
        merged=merged or [],
        units=units,
    )
    return render(request, "knowledge/form.html", context, status_code=status)


@router.get("/knowledge/new")
def new_form(request: Request, session: SessionDep, person: Person = WRITER) -> Response:
    blank = _form_values(*([""] * 11))
    if person.user.unit_id is not None and person.role == Role.handler:
        blank["owner_unit_id"] = str(person.user.unit_id)
    return _form_page(request, session, person, form=blank)


@router.post("/knowledge/new", dependencies=POSTED)
def create(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    person: Person = WRITER,
    title: Field = "",
    body: Body = "",
    category_code: Field = "",
    owner_unit_id: Field = "",
    policy_source: Field = "",
    document_number: Field = "",
    region: Field = "",
    valid_from: Field = "",
    valid_until: Field = "",
    review_due: Field = "",
    note: Field = "",
) -> Response:
    form = _form_values(
        title,
        body,
        category_code,
        owner_unit_id,
        policy_source,
        document_number,
        region,
        valid_from,
        valid_until,
        review_due,
        note,
    )
    data, errors = _parse(form, _zone(request))
    if not errors:
        try:
            model = KnowledgeArticleCreate.model_validate(data)
        except ValidationError as exc:
            errors = _model_errors(exc)
    if errors:
        return _form_page(request, session, person, form=form, errors=errors, status=422)
    article, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: service.create_article(
            session, user=person.user, data=model, now=clock.now(), note=form["note"]
        ),
        action="knowledge.page.create",
        target=f"unit:{data['owner_unit_id']}",
    )
    if refused is not None or article is None:
        assert refused is not None
        return _form_page(
            request,
            session,
            person,
            form=form,
            errors=_refusal_fields(refused),
            error=_refused(refused),
            status=403 if isinstance(refused, Forbidden) else 422,
        )
    return _done(f"/knowledge/{article.id}", "created")


def _model_errors(exc: ValidationError) -> dict[str, str]:
    found: dict[str, str] = {}
    for problem in exc.errors():
        name = str(problem["loc"][0]) if problem["loc"] else "form"
        found.setdefault(name, _("Not accepted: %(detail)s", detail=problem["msg"]))
    return found


def _refusal_fields(exc: DomainError) -> dict[str, str]:
    if "owner_unit_id" in exc.details or isinstance(exc, Forbidden):
        return {"owner_unit_id": _refused(exc)}
    for name in FIELD_NAMES:
        if exc.message.startswith(name):
            return {name: _refused(exc)}
    return {}


@router.get("/knowledge/{article_id}/edit")
def edit_form(
    request: Request, article_id: int, session: SessionDep, person: Person = WRITER
) -> Response:
    article = service.get_article(session, user=person.user, article_id=article_id)
    if not may_write(person.user, article.owner_unit_id):
        raise NotAllowed
    return _form_page(
        request,
        session,
        person,
        form=_form_from_article(article, _zone(request)),
        article=article,
        expected_version=article.version,
    )


@router.post("/knowledge/{article_id}/edit", dependencies=POSTED)
def edit(
    request: Request,
    article_id: int,
    session: SessionDep,
    clock: ClockDep,
    person: Person = WRITER,
    expected_version: Annotated[int, Form()] = 0,
    title: Field = "",
    body: Body = "",
    category_code: Field = "",
    owner_unit_id: Field = "",
    policy_source: Field = "",
    document_number: Field = "",
    region: Field = "",
    valid_from: Field = "",
    valid_until: Field = "",
    review_due: Field = "",
    note: Field = "",
) -> Response:
    article = service.get_article(session, user=person.user, article_id=article_id)
    form = _form_values(
        title,
        body,
        category_code,
        owner_unit_id,
        policy_source,
        document_number,
        region,
        valid_from,
        valid_until,
        review_due,
        note,
    )
    data, errors = _parse(form, _zone(request))
    if errors:
        return _form_page(
            request,
            session,
            person,
            form=form,
            article=article,
            expected_version=expected_version,
            errors=errors,
            status=422,
        )
    changes = KnowledgeArticleUpdate.model_validate(data)
    saved, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: service.edit_article(
            session,
            user=person.user,
            article_id=article_id,
            expected_version=expected_version,
            changes=changes,
            now=clock.now(),
            note=form["note"],
        ),
        action="knowledge.page.edit",
        target=article.number,
        detail={"expected_version": expected_version},
    )
    if refused is None:
        return _done(f"/knowledge/{article_id}", "saved")
    session.refresh(article)
    if isinstance(refused, Conflict) and not isinstance(refused, IllegalTransition):
        # Someone saved in between: keep what was typed, take in what only they changed,
        # name the fields both changed, and let the editor save over it knowingly (the form
        # now expects the current version).
        merged, theirs, both = _merge(session, person, article, form, expected_version, request)
        return _form_page(
            request,
            session,
            person,
            form=merged,
            article=article,
            expected_version=article.version,
            conflict=article.version,
            merged=[_(FIELD_NAMES[n]) for n in theirs],
            errors={n: _("Changed by them too: compare before saving.") for n in both},
            error=_(
                "Someone else saved version %(version)s while you were editing. Your text "
                "is kept below: compare it with the current version, then save again.",
                version=article.version,
            ),
            status=409,
        )
    return _form_page(
        request,
        session,
        person,
        form=form,
        article=article,
        expected_version=expected_version,
        errors=_refusal_fields(refused),
        error=_refused(refused),
        status=409 if isinstance(refused, Conflict) else 422,
    )


# ---------------------------------------------------------------- review, feedback, dashboard


@router.get("/knowledge/review")
def review(request: Request, session: SessionDep, person: Person = APPROVER) -> Response:
    context = _base(request, person, "/knowledge/review")
    context["rows"] = reports.review_queue(session, user=person.user)
    return render(request, "knowledge/review.html", context)


@router.get("/knowledge/feedback")
def feedback(
    request: Request, session: SessionDep, person: Person = WRITER, handled: str = ""
) -> Response:
    context = _base(request, person, "/knowledge/feedback")
    context.update(
        handled=bool(handled),
        rows=reports.feedback(session, user=person.user, handled=bool(handled)),
    )
    return render(request, "knowledge/feedback.html", context)


@router.post("/knowledge/feedback/{use_id}/handled", dependencies=POSTED)
def feedback_handled(
    request: Request, use_id: int, session: SessionDep, clock: ClockDep, person: Person = WRITER
) -> Response:
    _result, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: reports.mark_feedback_handled(
            session, user=person.user, use_id=use_id, now=clock.now()
        ),
        action="knowledge.page.feedback_handled",
        target=f"knowledge_use:{use_id}",
    )
    if isinstance(refused, NotFound):
        # Rendered, not raised: raising would roll back the audit entry of the refusal.
        return render(
            request,
            "errors/problem.html",
            {"status": 404, "not_found": True, "refused": None},
            status_code=404,
        )
    if refused is not None:
        context = _base(request, person, "/knowledge/feedback")
        context.update(
            handled=False,
            rows=reports.feedback(session, user=person.user),
            error=_("This feedback was marked as handled already."),
        )
        return render(request, "knowledge/feedback.html", context, status_code=409)
    return _done("/knowledge/feedback", "handled")


@router.get("/knowledge/dashboard")
def dashboard(
    request: Request, session: SessionDep, clock: ClockDep, person: Person = WRITER, days: int = 30
) -> Response:
    days = min(max(days, 1), 366)
    now = clock.now()
    context = _base(request, person, "/knowledge/dashboard")
    context.update(
        days=days,
        board=reports.dashboard(
            session, user=person.user, since=now - timedelta(days=days), until=now, now=now
        ),
    )
    return render(request, "knowledge/dashboard.html", context)


# ---------------------------------------------------------------- one article


def _article_page(
    request: Request,
    session: Session,
    person: Person,
    article_id: int,
    *,
    version: int | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    reasons: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    view = reports.article_view(session, user=person.user, article_id=article_id, version=version)
    user = person.user
    state = view.article.status
    context = _base(request, person, "")
    context.update(
        view=view,
        body=render_markdown(view.shown.body),
        may_submit=view.may_write and state == ArticleStatus.draft,
        may_review=user.role in CENTRE_APPROVERS and state == ArticleStatus.in_review,
        may_retire=user.role in CENTRE_EDITORS and state != ArticleStatus.retired,
        errors=errors or {},
        reasons=reasons or {},
    )
    if error:
        context["error"] = error
    return render(request, "knowledge/article.html", context, status_code=status)


@router.get("/knowledge/{article_id}")
def article(
    request: Request,
    article_id: int,
    session: SessionDep,
    person: Person = ANYONE,
    version: int | None = None,
) -> Response:
    return _article_page(request, session, person, article_id, version=version)


def _move(
    request: Request,
    session: Session,
    clock: Clock,
    person: Person,
    article_id: int,
    *,
    action: str,
    done: str,
    reason: str | None = None,
) -> Response:
    article = service.get_article(session, user=person.user, article_id=article_id)
    now = clock.now()
    user = person.user
    operations = {
        "submit": lambda: service.submit_for_review(
            session, user=user, article_id=article_id, now=now
        ),
        "approve": lambda: service.approve_article(
            session, user=user, article_id=article_id, now=now
        ),
        "send_back": lambda: service.send_back(
            session, user=user, article_id=article_id, reason=reason or "", now=now
        ),
        "retire": lambda: service.retire_article(
            session, user=user, article_id=article_id, reason=reason or "", now=now
        ),
    }
    _result, refused = attempt(
        session,
        request,
        clock,
        person,
        operations[action],
        action=f"knowledge.page.{action}",
        target=article.number,
        detail={"version": article.version},
    )
    if refused is None:
        return _done(f"/knowledge/{article_id}", done)
    if isinstance(refused, NotFound):
        raise refused
    session.refresh(article)
    if reason is not None and not reason.strip():
        return _article_page(
            request,
            session,
            person,
            article_id,
            errors={action: _("Give a reason.")},
            status=422,
        )
    status = 403 if isinstance(refused, Forbidden) else 409
    return _article_page(
        request,
        session,
        person,
        article_id,
        error=_refused(refused),
        reasons={action: reason or ""},
        status=status,
    )


@router.post("/knowledge/{article_id}/submit", dependencies=POSTED)
def submit(
    request: Request, article_id: int, session: SessionDep, clock: ClockDep, person: Person = WRITER
) -> Response:
    return _move(request, session, clock, person, article_id, action="submit", done="submitted")


@router.post("/knowledge/{article_id}/approve", dependencies=POSTED)
def approve(
    request: Request,
    article_id: int,
    session: SessionDep,
    clock: ClockDep,
    person: Person = APPROVER,
) -> Response:
    return _move(request, session, clock, person, article_id, action="approve", done="approved")


@router.post("/knowledge/{article_id}/send-back", dependencies=POSTED)
def send_back(
    request: Request,
    article_id: int,
    session: SessionDep,
    clock: ClockDep,
    person: Person = APPROVER,
    reason: Field = "",
) -> Response:
    return _move(
        request,
        session,
        clock,
        person,
        article_id,
        action="send_back",
        done="sent_back",
        reason=reason,
    )


@router.post("/knowledge/{article_id}/retire", dependencies=POSTED)
def retire(
    request: Request,
    article_id: int,
    session: SessionDep,
    clock: ClockDep,
    person: Person = WRITER,
    reason: Field = "",
) -> Response:
    return _move(
        request, session, clock, person, article_id, action="retire", done="retired", reason=reason
    )
