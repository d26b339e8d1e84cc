"""Admin: the accounts of the people who use the platform.

GET  /admin/users                     accounts: filter, sort, page; a form for a new one
POST /admin/users                     create an account (its first password shown once)
GET  /admin/users/{id}                an account: role and unit, state, password, lock-out
POST /admin/users/{id}/role           change role, unit, headship
POST /admin/users/{id}/deactivate     no more sign-ins (its sessions end)
POST /admin/users/{id}/reactivate
POST /admin/users/{id}/password       a new password, shown once; changed at next sign-in
POST /admin/users/{id}/unlock         lift a lock-out after failed sign-ins
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from accounts import service as accounts
from accounts.models import Role, User
from accounts.signin import end_user_sessions, new_password, set_password
from core.db import saved_id
from core.errors import NotFound
from dispatch import units as unit_service
from dispatch.units import UserCreate
from web.api.schemas import user_read, user_reads
from web.deps import MAX_ID, ClockDep, SessionDep
from web.pages.admin_common import (
    ADMIN,
    POSTED,
    Text,
    attempt,
    done,
    field_errors,
    is_htmx,
    notice,
    words,
)
from web.pages.admin_units import FIELD_HINTS, blank, hinted
from web.pages.i18n import _
from web.pages.people import Person
from web.pages.templating import render

router = APIRouter(include_in_schema=False)

USER_SORTS = {
    "username": lambda u: u.username,
    "name": lambda u: u.display_name,
    "role": lambda u: u.role.value,
    "unit": lambda u: (u.unit_code or "", u.username),
    "created": lambda u: u.created_at,
}
USERS_PAGE = 40


# ---------------------------------------------------------------- accounts


def _users_page(
    request: Request,
    session: Any,
    *,
    q: str = "",
    role: str = "",
    unit: str = "",
    state: str = "",
    sort: str = "username",
    page: int = 1,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    error: str | None = None,
    created: tuple[User, str] | None = None,
    status: int = 200,
) -> Response:
    chosen_role = Role(role) if role in Role.__members__ else None
    units = unit_service.list_units(session)
    unit_code = unit if any(u.code == unit for u in units) else None
    active = {"active": True, "inactive": False}.get(state)
    found = unit_service.list_users(session, role=chosen_role, unit_code=unit_code, active=active)
    now = request.app.state.clock.now()
    locked = {u.id for u in found if u.locked_until is not None and u.locked_until > now}
    rows = user_reads(session, found)
    if q:
        needle = q.lower()
        rows = [r for r in rows if needle in r.username.lower() or needle in r.display_name]
    key = sort.lstrip("-")
    rows.sort(key=USER_SORTS.get(key, USER_SORTS["username"]), reverse=sort.startswith("-"))
    pages = max(1, -(-len(rows) // USERS_PAGE))
    page = min(max(page, 1), pages)
    context = {
        "users": rows[(page - 1) * USERS_PAGE : page * USERS_PAGE],
        "total": len(rows),
        "locked": locked,
        "units": units,
        "unit_names": {u.code: u.name for u in units},
        "roles": list(Role),
        "filters": {"q": q, "role": role, "unit": unit, "state": state},
        "sort": sort,
        "page": page,
        "pages": pages,
        "form": form or {},
        "errors": errors or {},
        "error": error,
        "created": created,
        "notice": notice(request),
    }
    block = "results" if is_htmx(request) and form is None and created is None else None
    return render(request, "admin/users.html", context, status_code=status, block=block)


@router.get("/admin/users")
def users_page(
    request: Request,
    session: SessionDep,
    person: Person = ADMIN,
    q: Annotated[str, Query(max_length=100)] = "",
    role: Annotated[str, Query(max_length=32)] = "",
    unit: Annotated[str, Query(max_length=32)] = "",
    state: Annotated[str, Query(max_length=16)] = "",
    sort: Annotated[str, Query(max_length=16)] = "username",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> Response:
    return _users_page(
        request, session, q=q.strip(), role=role, unit=unit, state=state, sort=sort, page=page
    )


@router.post("/admin/users", dependencies=POSTED)
def create_user(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    person: Person = ADMIN,
    username: Text = "",
    display_name: Text = "",
    role: Text = "",
    unit_code: Text = "",
    email: Text = "",
    is_head: Text = "",
) -> Response:
    form = {
        "username": username.strip(),
        "display_name": display_name,
        "role": role,
        "unit_code": blank(unit_code),
        "email": blank(email),
        "is_head": bool(is_head),
    }
    try:
        data = UserCreate.model_validate(form)
    except ValidationError as exc:
        return _users_page(request, session, form=form, errors=hinted(exc), status=422)
    password = new_password()

    def create() -> User:
        user, _token = unit_service.create_user(session, **data.model_dump(), now=clock.now())
        return set_password(
            session, user_id=saved_id(user), password=password, now=clock.now(), must_change=True
        )

    user, refused = attempt(
        session,
        request,
        clock,
        person,
        create,
        action="admin.user.create",
        target=f"user:{data.username}",
        detail={"role": data.role.value, "unit": data.unit_code},
    )
    if refused is not None or user is None:
        assert refused is not None
        return _users_page(
            request,
            session,
            form=form,
            errors=field_errors(refused),
            error=words(refused),
            status=422,
        )
    return _users_page(request, session, unit=data.unit_code or "", created=(user, password))


def _user(session: Any, user_id: int) -> User:
    if not 1 <= user_id <= MAX_ID:
        raise NotFound(f"user {user_id} does not exist", user_id=user_id)
    return accounts.get_user(session, user_id=user_id)


def _user_page(
    request: Request,
    session: Any,
    user: User,
    *,
    password: str | None = None,
    error: str | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    now = request.app.state.clock.now()
    context = {
        "user": user,
        "read": user_read(session, user),
        "units": unit_service.list_units(session),
        "roles": list(Role),
        "locked": user.locked_until is not None and user.locked_until > now,
        "password": password,
        "error": error,
        "errors": errors or {},
        "notice": notice(request),
    }
    return render(request, "admin/user.html", context, status_code=status)


@router.get("/admin/users/{user_id}")
def user_page(
    user_id: int, request: Request, session: SessionDep, person: Person = ADMIN
) -> Response:
    return _user_page(request, session, _user(session, user_id))


@router.post("/admin/users/{user_id}/role", dependencies=POSTED)
def change_role(
    user_id: int,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    person: Person = ADMIN,
    role: Text = "",
    unit_code: Text = "",
    is_head: Text = "",
) -> Response:
    user = _user(session, user_id)
    if role not in Role.__members__:
        return _user_page(
            request, session, user, errors={"role": _(FIELD_HINTS["role"])}, status=422
        )
    _result, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: unit_service.change_user_role(
            session,
            user_id=user_id,
            role=Role(role),
            unit_code=blank(unit_code),
            is_head=bool(is_head),
        ),
        action="admin.user.role",
        target=f"user:{user.username}",
        detail={"role": role, "unit": blank(unit_code)},
    )
    if refused is not None:
        session.refresh(user)
        return _user_page(
            request,
            session,
            user,
            error=words(refused),
            errors=field_errors(refused),
            status=422,
        )
    return done(f"/admin/users/{user_id}", "user_saved")


@router.post("/admin/users/{user_id}/deactivate", dependencies=POSTED)
def deactivate(
    user_id: int, request: Request, session: SessionDep, clock: ClockDep, person: Person = ADMIN
) -> Response:
    user = _user(session, user_id)

    def deactivate_and_sign_out() -> User:
        changed = accounts.deactivate_user(session, user_id=user_id)
        end_user_sessions(session, user_id=user_id, now=clock.now())
        return changed

    _result, refused = attempt(
        session,
        request,
        clock,
        person,
        deactivate_and_sign_out,
        action="admin.user.deactivate",
        target=f"user:{user.username}",
    )
    if refused is not None:
        session.refresh(user)
        return _user_page(request, session, user, error=words(refused), status=409)
    return done(f"/admin/users/{user_id}", "user_deactivated")


@router.post("/admin/users/{user_id}/reactivate", dependencies=POSTED)
def reactivate(
    user_id: int, request: Request, session: SessionDep, clock: ClockDep, person: Person = ADMIN
) -> Response:
    user = _user(session, user_id)
    attempt(
        session,
        request,
        clock,
        person,
        lambda: accounts.reactivate_user(session, user_id=user_id),
        action="admin.user.reactivate",
        target=f"user:{user.username}",
    )
    return done(f"/admin/users/{user_id}", "user_reactivated")


@router.post("/admin/users/{user_id}/password", dependencies=POSTED)
def reset_password(
    user_id: int, request: Request, session: SessionDep, clock: ClockDep, person: Person = ADMIN
) -> Response:
    user = _user(session, user_id)
    password = new_password()
    changed, refused = attempt(
        session,
        request,
        clock,
        person,
        lambda: set_password(
            session, user_id=user_id, password=password, now=clock.now(), must_change=True
        ),
        action="admin.user.reset_password",
        target=f"user:{user.username}",
    )
    if refused is not None or changed is None:
        return _user_page(request, session, user, error=words(refused) if refused else None)
    return _user_page(request, session, changed, password=password)


@router.post("/admin/users/{user_id}/unlock", dependencies=POSTED)
def unlock(
    user_id: int, request: Request, session: SessionDep, clock: ClockDep, person: Person = ADMIN
) -> Response:
    from accounts.signin import unlock as unlock_account

    user = _user(session, user_id)
    attempt(
        session,
        request,
        clock,
        person,
        lambda: unlock_account(session, user_id=user_id),
        action="admin.user.unlock",
        target=f"user:{user.username}",
    )
    return done(f"/admin/users/{user_id}", "user_unlocked")
