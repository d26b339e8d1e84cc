"""Writing in the knowledge base (知识库): a new draft and a new version (units for their
own domain), and the steps of an article's life — submit, approve, send back, retire.
A refused form comes back with everything typed in it and the fields named; a save that
crossed another's keeps the editor's text and takes in what only the other changed.

    GET  /knowledge/new                  a new draft's form          POST: create it
    GET  /knowledge/{id}/edit            the edit form               POST: save a version
    POST /knowledge/{id}/submit | approve | send-back | retire

Every post is CSRF-checked and audited (a refusal too). ``GET /knowledge/new`` must be
matched before ``/knowledge/{id}`` (``web.pages.knowledge``): web/app.py includes this
router first."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from pydantic import ValidationError
from sqlmodel import Session
from starlette.responses import Response

from accounts.models import Role
from core.clock import Clock
from core.errors import Conflict, DomainError, Forbidden, IllegalTransition, NotFound
from hotline.knowledge import attachments, service
from hotline.knowledge.lifecycle import may_write
from hotline.knowledge.models import CATEGORY_CODE, KnowledgeArticleCreate, KnowledgeArticleUpdate
from web.deps import ClockDep, SessionDep
from web.pages.admin_common import attempt
from web.pages.i18n import _
from web.pages.knowledge_common import (
    APPROVER,
    FIELD_NAMES,
    POSTED,
    WRITER,
    Body,
    Field,
    active_units,
    article_page,
    done_redirect,
    in_words,
    page_context,
    small_id,
)
from web.pages.knowledge_files import FileForm, Ids, Uploads, files_context, take_uploads
from web.pages.people import NotAllowed, Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)


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


def _local_date(value: str, zone: ZoneInfo) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    return datetime.combine(date.fromisoformat(value), time(), tzinfo=zone)


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
    owner = small_id(form["owner_unit_id"])
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
    files: FileForm | None = None,
    status: int = 200,
) -> Response:
    units = active_units(session)
    if person.role == Role.handler:
        units = [u for u in units if u.id == person.user.unit_id]
    context = page_context(request, person, "/knowledge/new" if article is None else "")
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
    if article is not None:
        context.update(files_context(request, session, article, files or FileForm()))
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
            error=in_words(refused),
            status=403 if isinstance(refused, Forbidden) else 422,
        )
    return done_redirect(f"/knowledge/{article.id}", "created")


def _model_errors(exc: ValidationError) -> dict[str, str]:
    found: dict[str, str] = {}
    for problem in exc.errors():
        name = str(problem["loc"][0]) if problem["loc"] else "form"
        found.setdefault(name, _("Not accepted: %(detail)s", detail=problem["msg"]))
    return found


def _refusal_fields(exc: DomainError) -> dict[str, str]:
    if "owner_unit_id" in exc.details or isinstance(exc, Forbidden):
        return {"owner_unit_id": in_words(exc)}
    for name in FIELD_NAMES:
        if exc.message.startswith(name):
            return {name: in_words(exc)}
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
    files: Uploads = [],  # noqa: B006 (FastAPI copies it)
    staged: Ids = [],  # noqa: B006
    remove: Ids = [],  # noqa: B006
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
    # The chosen files are kept first, so a refusal below loses none already accepted.
    file_form = take_uploads(
        request, session, clock, person, article, files=files, staged=staged, remove=remove
    )
    if errors or file_form.errors:
        return _form_page(
            request,
            session,
            person,
            form=form,
            article=article,
            expected_version=expected_version,
            errors=errors,
            error=_("Not saved: a file was refused (see Attachments); nothing typed is lost.")
            if file_form.errors
            else None,
            files=file_form,
            status=422,
        )
    changes = KnowledgeArticleUpdate.model_validate(data)
    saved, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: attachments.save_version(
            session,
            user=person.user,
            article_id=article_id,
            expected_version=expected_version,
            changes=changes,
            now=clock.now(),
            note=form["note"],
            add=file_form.staged,
            remove=file_form.remove,
        ),
        action="knowledge.page.edit",
        target=article.number,
        detail={
            "expected_version": expected_version,
            "add": file_form.staged,
            "remove": file_form.remove,
        },
    )
    if refused is None:
        return done_redirect(f"/knowledge/{article_id}", "saved")
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
            files=file_form,
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
        error=in_words(refused),
        files=file_form,
        status=409 if isinstance(refused, Conflict) else 422,
    )


# ---------------------------------------------------------------- an article's steps


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
        return done_redirect(f"/knowledge/{article_id}", done)
    if isinstance(refused, NotFound):
        raise refused
    session.refresh(article)
    if reason is not None and not reason.strip():
        return article_page(
            request,
            session,
            person,
            article_id,
            errors={action: _("Give a reason.")},
            status=422,
        )
    status = 403 if isinstance(refused, Forbidden) else 409
    return article_page(
        request,
        session,
        person,
        article_id,
        error=in_words(refused),
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
