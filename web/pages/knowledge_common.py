"""What the knowledge base's pages share: who may read, write and approve, the statuses'
and fields' names, the notices after a step, a refusal of the knowledge service in the
reader's words, the tabs and context every page starts from, an article's Markdown made
safe, and the article page (shown after a step too, with what was refused)."""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import RedirectResponse
from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlmodel import Session
from starlette.responses import Response

from accounts.models import Role
from core.errors import Conflict, DomainError, Forbidden, IllegalTransition
from dispatch import units as unit_service
from hotline.knowledge import attachments, reports
from hotline.knowledge.lifecycle import CENTRE_APPROVERS, CENTRE_EDITORS
from hotline.knowledge.models import ArticleStatus
from web.pages.i18n import N_, _
from web.pages.people import Person, csrf_form, require
from web.pages.templating import render

POSTED = [Depends(csrf_form)]
ANYONE = require(*Role)
WRITERS = frozenset(CENTRE_EDITORS | {Role.handler})
WRITER = require(*WRITERS)
APPROVER = require(*CENTRE_APPROVERS)

Field = Annotated[str, Form(max_length=2000)]
Body = Annotated[str, Form(max_length=200_000)]  # the model's limit is checked with the form kept

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
# A version's "fields changed" names its files too (hotline.knowledge.attachments.CHANGE).
CHANGE_NAMES = FIELD_NAMES | {"attachments": N_("Attachments")}
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


# An article's own file in its Markdown: [name](attachment:12), ![map](attachment:13).
ATTACHMENT_LINK = re.compile(r"^attachment:(\d{1,9})$")


def render_markdown(text: str, files: Collection[int] | None = None) -> Markup:
    """The Markdown as HTML, its attachment: links made links to the files (an image shown
    in place). With `files` — the ids the version carries — a link to any other file leads
    to the version's list of files instead."""
    env: dict[str, Any] = {}
    tokens = MARKDOWN.parse(text, env)
    for token in tokens:
        for child in token.children or ():
            attr = {"image": "src", "link_open": "href"}.get(child.type)
            found = ATTACHMENT_LINK.match(str(child.attrGet(attr) or "")) if attr else None
            if attr is None or found is None:
                continue
            file_id = int(found[1])
            if files is not None and file_id not in files:
                child.attrSet(attr, "#kb-files")
            else:
                inline = "?inline=1" if child.type == "image" else ""
                child.attrSet(attr, f"/knowledge/files/{file_id}{inline}")
    # Safe to mark: with html off, markdown-it escapes every tag the text holds.
    return Markup(MARKDOWN.renderer.render(tokens, MARKDOWN.options, env))


def _notice(request: Request) -> str | None:
    key = request.query_params.get("done")
    return _(NOTICES[key]) if key in NOTICES else None


def done_redirect(path: str, key: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?done={key}", status_code=303)


def in_words(exc: DomainError) -> str:
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
    if exc.details.get("problem") == "gone":
        return _("An uploaded file is no longer kept: choose it again.")
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


def file_size(size: int) -> str:
    """A file's size as people read it: 980 B, 12.5 KB, 3.2 MB."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def page_context(request: Request, person: Person, current: str) -> dict[str, Any]:
    return {
        "kb_tabs": _tabs(person),
        "current": current,
        "notice": _notice(request),
        "error": None,
        "status_names": STATUS_NAMES,
        "field_names": CHANGE_NAMES,
        "file_size": file_size,
        # "valid until" is the first moment no longer valid; people read the last valid day
        "last_day": lambda v: v - timedelta(microseconds=1) if v else None,
    }


def active_units(session: Session) -> list[Any]:
    return unit_service.list_units(session, active_only=True)


def small_id(value: str) -> int | None:
    """An id typed or posted: ASCII digits that fit the column, else None."""
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None


def article_page(
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
    saved = attachments.saved_files(session, article_id=article_id)
    shown = [f for f in saved if f.in_version(view.shown.version)]
    file_changes = attachments.changes_by_version(saved)
    context = page_context(request, person, "")
    context.update(
        view=view,
        body=render_markdown(view.shown.body, files={f.id for f in shown if f.id is not None}),
        files=shown,
        file_changes=file_changes,
        shown_changes=file_changes.get(view.shown.version) if view.diff else None,
        images=attachments.IMAGES,
        may_submit=view.may_write and state == ArticleStatus.draft,
        may_review=user.role in CENTRE_APPROVERS and state == ArticleStatus.in_review,
        may_retire=user.role in CENTRE_EDITORS and state != ArticleStatus.retired,
        errors=errors or {},
        reasons=reasons or {},
    )
    if error:
        context["error"] = error
    return render(request, "knowledge/article.html", context, status_code=status)
