"""Who is using a page: the session cookie, the signed-in person and their role, CSRF checks on
every state-changing request, and the audit entry of every action taken from a page.

The session cookie is HttpOnly, SameSite=Lax, Secure in production (``WEB__COOKIE_SECURE``),
and carries only a random token (its hash is the ``user_session`` row). State-changing
requests (POST, PUT, PATCH, DELETE) must send the session's CSRF token, as the form field
``csrf_token`` or (htmx) the ``X-CSRF-Token`` header — the base layout sets both — and, when
the browser says where it comes from (``Origin``), come from this site."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from sqlmodel import Session
from starlette.responses import Response

from accounts import audit
from accounts.models import Role, User, UserSession
from accounts.signin import SignInPolicy, resume_session
from core.clock import Clock
from core.settings import Settings
from web.deps import ClockDep, SessionDep
from web.pages import i18n

SESSION_COOKIE = "hotline_session"
LOCALE_COOKIE = "hotline_locale"
PRE_CSRF_COOKIE = "hotline_signin_csrf"  # the sign-in form's CSRF token (no session yet)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def policy(settings: Settings) -> SignInPolicy:
    web = settings.web
    return SignInPolicy(
        idle=timedelta(minutes=web.session_idle_minutes),
        max_age=timedelta(hours=web.session_max_hours),
        max_failures=web.login_max_failures,
        lockout=timedelta(minutes=web.login_lockout_minutes),
    )


def cookie_secure(settings: Settings) -> bool:
    chosen = settings.web.cookie_secure
    return settings.environment == "production" if chosen is None else chosen


def client_address(request: Request) -> str | None:
    """The client's address (behind nginx: uvicorn's ``--proxy-headers`` puts the real one
    here from X-Forwarded-For when the proxy is in ``--forwarded-allow-ips``)."""
    return request.client.host if request.client else None


@dataclass
class Person:
    """The signed-in person of a request."""

    user: User
    session: UserSession

    @property
    def id(self) -> int:
        assert self.user.id is not None
        return self.user.id

    @property
    def role(self) -> Role:
        return self.user.role


class SignInRequired(Exception):
    """No live session: a page redirects to the sign-in form (an htmx request is told to
    load it, ``HX-Redirect``), and comes back after it."""


class CsrfRefused(Exception):
    """A state-changing request without the session's CSRF token, or from another site."""


class NotAllowed(Exception):
    """Signed in, but this page is not for the person's role."""


def _locale_for(request: Request, user: User | None) -> str:
    settings: Settings = request.app.state.settings
    return i18n.negotiate(
        user.locale if user else None,
        request.cookies.get(LOCALE_COOKIE),
        default=settings.web.default_locale,
    )


async def page_locale(request: Request) -> str:
    """For pages without a person (sign-in): the language cookie or the default."""
    locale = _locale_for(request, None)
    i18n.set_locale(locale)
    return locale


async def optional_person(request: Request, session: SessionDep, clock: ClockDep) -> Person | None:
    """The signed-in person, or None (the language set from the cookie or the default).

    Async on purpose: the language is a context variable, and only what is set on the event
    loop reaches the route (a sync dependency runs in a worker thread of its own context);
    the database work goes to the thread pool."""
    token = request.cookies.get(SESSION_COOKIE)
    resumed = None
    if token:
        resumed = await run_in_threadpool(
            resume_session,
            session,
            token=token,
            now=clock.now(),
            policy=policy(request.app.state.settings),
        )
    if resumed is None:
        i18n.set_locale(_locale_for(request, None))
        return None
    row, user = resumed
    person = Person(user=user, session=row)
    request.state.person = person
    request.state.csrf_token = row.csrf_token
    i18n.set_locale(_locale_for(request, user))
    if request.method in UNSAFE_METHODS:
        _check_csrf(request, row.csrf_token)
    return person


async def current_person(person: Annotated[Person | None, Depends(optional_person)]) -> Person:
    if person is None:
        raise SignInRequired
    return person


CurrentPerson = Annotated[Person, Depends(current_person)]
OptionalPerson = Annotated[Person | None, Depends(optional_person)]


def require(*roles: Role) -> Any:
    """A dependency: the signed-in person, who must hold one of ``roles``."""

    async def guard(person: CurrentPerson) -> Person:
        if person.role not in roles:
            raise NotAllowed
        return person

    return Depends(guard)


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _check_csrf(request: Request, expected: str) -> None:
    """The header is checked here; a form's field is checked by ``csrf_form`` (the body is
    read by the route's own Form parameters)."""
    if not _same_origin(request):
        raise CsrfRefused
    sent = request.headers.get("x-csrf-token")
    if sent is not None:
        if not secrets.compare_digest(sent, expected):
            raise CsrfRefused
        request.state.csrf_checked = True


async def csrf_form(request: Request, person: CurrentPerson) -> None:
    """For form posts: the ``csrf_token`` field (unless the header already carried it)."""
    if getattr(request.state, "csrf_checked", False):
        return
    expected = getattr(request.state, "csrf_token", None)
    form = await request.form()
    sent = form.get("csrf_token")
    if not expected or not isinstance(sent, str) or not secrets.compare_digest(sent, expected):
        raise CsrfRefused


def record(
    session: Session,
    request: Request,
    clock: Clock,
    *,
    action: str,
    person: Person | None = None,
    target: str | None = None,
    outcome: str = "ok",
    username: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """The audit entry of an action taken from a page."""
    audit.record(
        session,
        at=clock.now(),
        action=action,
        user_id=person.id if person else None,
        username=username or (person.user.username if person else None),
        target=target,
        outcome=outcome,
        address=client_address(request),
        detail=detail,
    )


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path on this site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def install(app: FastAPI) -> None:
    from web.pages.templating import render

    @app.exception_handler(SignInRequired)
    async def to_sign_in(request: Request, _: SignInRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        location = "/signin" if target == "/" else f"/signin?next={quote(target, safe='')}"
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": location})
        if request.method not in UNSAFE_METHODS:
            return RedirectResponse(location, status_code=303)
        return render(
            request,
            "errors/signed_out.html",
            {"next": safe_next(request.headers.get("referer") and target)},
            status_code=401,
        )

    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    from core.errors import DomainError, NotFound
    from web import errors
    from web.pages.labels import refusal

    def for_pages(json_handler: Any, page_status: Any) -> Any:
        """The API (and any client that does not ask for HTML) keeps its JSON errors; a
        browser or htmx gets the same error in words."""

        async def handler(request: Request, exc: Exception) -> Response:
            wants_page = request.headers.get("hx-request") or "text/html" in request.headers.get(
                "accept", ""
            )
            if request.url.path.startswith(("/api/", "/open311/")) or not wants_page:
                return await json_handler(request, exc)
            status = page_status(exc)
            request.state.person, request.state.csrf_token = None, ""
            # A refusal of the domain's (not a missing page) is said in the reader's words.
            refused = refusal(exc) if isinstance(exc, DomainError) and status != 404 else None
            return render(
                request,
                "errors/problem.html",
                {"status": status, "not_found": status == 404, "refused": refused},
                status_code=status,
            )

        return handler

    app.add_exception_handler(
        DomainError,
        for_pages(errors.domain_error, lambda e: 404 if isinstance(e, NotFound) else 400),
    )
    app.add_exception_handler(
        RequestValidationError, for_pages(errors.validation_error, lambda e: 400)
    )
    app.add_exception_handler(HTTPException, for_pages(errors.http_error, lambda e: e.status_code))

    # The request's unit of work has been rolled back by the time these run: the pages they
    # render show no person (their objects are detached from the closed session).
    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _: CsrfRefused) -> Response:
        request.state.person, request.state.csrf_token = None, ""
        return render(request, "errors/csrf.html", status_code=403)

    @app.exception_handler(NotAllowed)
    async def not_allowed(request: Request, _: NotAllowed) -> Response:
        request.state.person, request.state.csrf_token = None, ""
        return render(request, "errors/not_allowed.html", status_code=403)
