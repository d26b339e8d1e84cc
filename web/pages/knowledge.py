"""The knowledge base (知识库) in the browser: search and browse the articles, read one with
its versions, the centre's review queue, the "did not answer" feedback a unit works through,
and the dashboard. Writing — the draft and edit forms and the steps of an article's
life — is ``knowledge_forms``; what both share is ``knowledge_common``.

    GET  /knowledge                      search (q) or list; filters category, unit, status
    GET  /knowledge/review               the centre's review queue
    GET  /knowledge/feedback             feedback on the unit's articles (handled=1: done)
    POST /knowledge/feedback/{id}/handled
    GET  /knowledge/dashboard            used, going stale, feedback open, missing (days=)
    GET  /knowledge/{id}                 the article (version=N: that version and its diff)

Its files (upload, download) are ``knowledge_files``, whose routes this router includes.

Who may do what is the domain's (hotline/knowledge/lifecycle.py); these pages only show the
buttons a person may use and turn a refusal into words. Every post is CSRF-checked and
audited (a refusal too)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from sqlmodel import Session
from starlette.responses import Response

from accounts.models import Role, User
from core.clock import Clock
from core.errors import NotFound
from hotline.knowledge import reports
from hotline.knowledge.lifecycle import CENTRE_APPROVERS
from hotline.knowledge.models import ArticleStatus
from hotline.knowledge.search import make_index
from web.deps import ClockDep, SessionDep
from web.pages import knowledge_files, nav
from web.pages.admin_common import attempt
from web.pages.i18n import N_, _
from web.pages.knowledge_common import (
    ANYONE,
    APPROVER,
    POSTED,
    WRITER,
    WRITERS,
    active_units,
    article_page,
    done_redirect,
    page_context,
    small_id,
)
from web.pages.nav import NavItem
from web.pages.people import Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)
router.include_router(knowledge_files.router)  # /knowledge/files/{id}, /knowledge/{id}/files


def _waiting(session: Session, person: Person, now: datetime) -> int:
    """The centre's reviewers: articles waiting for review; a unit: its open feedback."""
    if person.role in CENTRE_APPROVERS:
        return reports.review_count(session)
    if person.role == Role.handler:
        return reports.open_feedback_count(session, user=person.user)
    return 0


nav.register(NavItem("/knowledge", N_("Knowledge base"), frozenset(Role), order=40, count=_waiting))

MATCH_KINDS = {
    "word": N_("same word"),
    "synonym": N_("synonym"),
    "pinyin": N_("same sound"),
    "fuzzy": N_("near spelling"),
}

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
    unit_id = small_id(unit)
    chosen = ArticleStatus(status) if status in set(ArticleStatus) else None
    if person.role not in WRITERS:
        chosen = None  # readers see what is in service only
    context = page_context(request, person, "/knowledge")
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
        units=active_units(session),
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


# ---------------------------------------------------------------- review, feedback, dashboard


@router.get("/knowledge/review")
def review(request: Request, session: SessionDep, person: Person = APPROVER) -> Response:
    context = page_context(request, person, "/knowledge/review")
    context["rows"] = reports.review_queue(session, user=person.user)
    return render(request, "knowledge/review.html", context)


@router.get("/knowledge/feedback")
def feedback(
    request: Request, session: SessionDep, person: Person = WRITER, handled: str = ""
) -> Response:
    context = page_context(request, person, "/knowledge/feedback")
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
        context = page_context(request, person, "/knowledge/feedback")
        context.update(
            handled=False,
            rows=reports.feedback(session, user=person.user),
            error=_("This feedback was marked as handled already."),
        )
        return render(request, "knowledge/feedback.html", context, status_code=409)
    return done_redirect("/knowledge/feedback", "handled")


@router.get("/knowledge/dashboard")
def dashboard(
    request: Request, session: SessionDep, clock: ClockDep, person: Person = WRITER, days: int = 30
) -> Response:
    days = min(max(days, 1), 366)
    now = clock.now()
    context = page_context(request, person, "/knowledge/dashboard")
    context.update(
        days=days,
        board=reports.dashboard(
            session, user=person.user, since=now - timedelta(days=days), until=now, now=now
        ),
    )
    return render(request, "knowledge/dashboard.html", context)


# ---------------------------------------------------------------- one article


@router.get("/knowledge/{article_id}")
def article(
    request: Request,
    article_id: int,
    session: SessionDep,
    person: Person = ANYONE,
    version: int | None = None,
) -> Response:
    return article_page(request, session, person, article_id, version=version)
