"""Signing in and out, the person's password and language.

GET  /signin               the form (with ?next= the page to return to)
POST /signin               username + password → a session cookie, or the form again
POST /signout              this browser
POST /signout/everywhere   every session of the person
GET  /account              the person's account: password, language, sessions
POST /account/password     current + new password
POST /account/locale       the pages' language (also signed out: a cookie)
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse
from sqlalchemy import select
from sqlmodel import col
from starlette.responses import Response

from accounts import audit
from accounts.models import UserSession
from accounts.signin import (
    SignInFailed,
    authenticate,
    end_session,
    end_user_sessions,
    set_password,
    start_session,
    verify_password,
)
from core.db import session_scope
from core.errors import InvalidInput
from web.deps import ClockDep, SessionDep
from web.pages import i18n
from web.pages.i18n import N_, _
from web.pages.people import (
    LOCALE_COOKIE,
    PRE_CSRF_COOKIE,
    SESSION_COOKIE,
    CsrfRefused,
    CurrentPerson,
    OptionalPerson,
    client_address,
    cookie_secure,
    csrf_form,
    page_locale,
    policy,
    record,
    safe_next,
)
from web.pages.templating import render

router = APIRouter(include_in_schema=False)

# The password policy's reasons (accounts.signin.password_problem), for the catalogues.
PASSWORD_PROBLEMS = (
    N_("a password needs at least 8 characters"),
    N_("a password has at most 128 characters"),
    N_(
        "a password needs three of: lower-case letters, upper-case letters, digits, "
        "other characters"
    ),
    N_("a password must not contain the username"),
)
SIGN_IN_FAILED = N_("Wrong username or password.")
# Failed sign-ins are slowed down before the answer: WEB__LOGIN_DELAY_S (0.5 s) doubling with
# each failure in a row, at most 8 times it.
MAX_DELAY_FACTOR = 8


def _signin_form(
    request: Request, *, next_url: str, error: str | None = None, username: str = "", status=200
) -> Response:
    pre = request.cookies.get(PRE_CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = render(
        request,
        "signin.html",
        {"next": next_url, "error": error, "username": username, "signin_csrf": pre},
        status_code=status,
    )
    response.set_cookie(
        PRE_CSRF_COOKIE,
        pre,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request.app.state.settings),
        path="/signin",
    )
    return response


@router.get("/signin", dependencies=[Depends(page_locale)])
def signin_form(request: Request, next: str | None = None) -> Response:
    return _signin_form(request, next_url=safe_next(next))


@router.post("/signin", dependencies=[Depends(page_locale)])
async def signin(
    request: Request,
    clock: ClockDep,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    expected = request.cookies.get(PRE_CSRF_COOKIE) or ""
    if not expected or not secrets.compare_digest(csrf_token, expected):
        raise CsrfRefused
    settings = request.app.state.settings
    sign_in_policy = policy(settings)
    address, agent = client_address(request), request.headers.get("user-agent")
    username = username.strip()

    def attempt() -> tuple[str | None, str | None, int]:
        """The new session's token, or None and why (for the page), and the failures so far."""
        with session_scope(request.app.state.session_factory) as session:
            now = clock.now()
            try:
                user = authenticate(
                    session, username=username, password=password, now=now, policy=sign_in_policy
                )
            except SignInFailed as failed:
                record_failure(session, failed, now)
                failures = failed.user.failed_logins if failed.user else 1
                if failed.reason == "locked" or failed.locked_until is not None:
                    return None, "locked", failures
                return None, "failed", failures
            token, row = start_session(
                session,
                user=user,
                now=now,
                policy=sign_in_policy,
                address=address,
                user_agent=agent,
            )
            audit.record(
                session,
                at=now,
                action="sign_in",
                user_id=user.id,
                username=user.username,
                address=address,
                detail={"session": row.id},
            )
            return token, ("must_change" if user.must_change_password else None), 0

    def record_failure(session, failed: SignInFailed, now) -> None:
        audit.record(
            session,
            at=now,
            action="sign_in",
            user_id=failed.user.id if failed.user else None,
            username=username,
            outcome="failed",
            address=address,
            detail={"reason": failed.reason},
        )

    token, problem, failures = await run_in_threadpool(attempt)
    if token is None:
        base = settings.web.login_delay_s
        await asyncio.sleep(min(base * 2 ** max(failures - 1, 0), base * MAX_DELAY_FACTOR))
        message = (
            _(
                "Too many failed sign-ins: this account is locked for %(minutes)d minutes. "
                "An administrator can unlock it.",
                minutes=settings.web.login_lockout_minutes,
            )
            if problem == "locked"
            else _(SIGN_IN_FAILED)
        )
        return _signin_form(
            request, next_url=safe_next(next), error=message, username=username, status=401
        )
    target = "/account?must_change=1" if problem == "must_change" else safe_next(next)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=cookie_secure(settings),
        max_age=settings.web.session_max_hours * 3600,
        path="/",
    )
    response.delete_cookie(PRE_CSRF_COOKIE, path="/signin")
    return response


@router.post("/signout", dependencies=[Depends(csrf_form)])
def signout(request: Request, person: CurrentPerson, session: SessionDep, clock: ClockDep):
    token = request.cookies.get(SESSION_COOKIE) or ""
    end_session(session, token=token, now=clock.now())
    record(session, request, clock, action="sign_out", person=person)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/signout/everywhere", dependencies=[Depends(csrf_form)])
def signout_everywhere(
    request: Request, person: CurrentPerson, session: SessionDep, clock: ClockDep
):
    ended = end_user_sessions(session, user_id=person.id, now=clock.now())
    record(
        session,
        request,
        clock,
        action="sign_out_everywhere",
        person=person,
        detail={"ended": ended},
    )
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _account_page(
    request: Request,
    person,
    session,
    *,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
) -> Response:
    sessions = list(
        session.scalars(
            select(UserSession)
            .where(col(UserSession.user_id) == person.id, col(UserSession.ended_at).is_(None))
            .order_by(col(UserSession.last_seen_at).desc())
        )
    )
    return render(
        request,
        "account.html",
        {
            "sessions": sessions,
            "error": error,
            "notice": notice,
            "must_change": person.user.must_change_password,
        },
        status_code=status,
    )


@router.get("/account")
def account(request: Request, person: CurrentPerson, session: SessionDep) -> Response:
    return _account_page(request, person, session)


@router.post("/account/password", dependencies=[Depends(csrf_form)])
def change_password(
    request: Request,
    person: CurrentPerson,
    session: SessionDep,
    clock: ClockDep,
    current: Annotated[str, Form(max_length=256)] = "",
    new: Annotated[str, Form(max_length=256)] = "",
    repeat: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    if not verify_password(person.user, current):
        record(session, request, clock, action="change_password", person=person, outcome="refused")
        return _account_page(
            request, person, session, error=_("The current password is wrong."), status=422
        )
    if new != repeat:
        return _account_page(
            request, person, session, error=_("The two new passwords differ."), status=422
        )
    try:
        set_password(session, user_id=person.id, password=new, now=clock.now(), end_sessions=False)
    except InvalidInput as exc:
        return _account_page(request, person, session, error=_(str(exc)), status=422)
    end_user_sessions(session, user_id=person.id, now=clock.now(), keep=person.session.id)
    record(session, request, clock, action="change_password", person=person)
    return _account_page(
        request,
        person,
        session,
        notice=_("Password changed. Your other sessions have been signed out."),
    )


@router.post("/account/locale")
def choose_locale(
    request: Request,
    person: OptionalPerson,
    session: SessionDep,
    locale: Annotated[str, Form(max_length=16)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """The language, for this browser (a cookie) and, when signed in, for the account (then
    the session's CSRF token is required, as for every change to an account)."""
    chosen = locale if locale in i18n.LOCALES else i18n.DEFAULT_LOCALE
    if person is not None:
        if not getattr(request.state, "csrf_checked", False) and not secrets.compare_digest(
            csrf_token, person.session.csrf_token
        ):
            raise CsrfRefused
        person.user.locale = chosen
        session.add(person.user)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        LOCALE_COOKIE,
        chosen,
        max_age=365 * 24 * 3600,
        samesite="lax",
        secure=cookie_secure(request.app.state.settings),
        path="/",
    )
    return response
