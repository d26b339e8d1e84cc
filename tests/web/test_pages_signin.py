"""Signing in to the pages: sessions in an HttpOnly cookie, CSRF on every change, failed
sign-ins throttled and locked, sign-out (here and everywhere), password change, the language
switch, the audit trail — and the landing page showing a handler only their unit's tickets.
Both backends, through the app (the browser tests drive the same pages in Chromium)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from accounts import audit
from accounts.models import AuditEntry, User
from accounts.signin import set_password
from tests.web.test_tickets import TICKETS, WATER_CUT, post

PASSWORD = "Hotline-12345"


@pytest.fixture
def delays(monkeypatch) -> list[float]:
    """The failed sign-ins' throttling delays, recorded instead of slept."""
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr("web.pages.signin.asyncio.sleep", record)
    return slept


@pytest.fixture
def people(session, world, clock):
    """Passwords for the centre's staff and two units' handlers."""
    for username in ("operator", "admin", "water.handler", "hrss.handler"):
        user = session.scalars(select(User).where(User.username == username)).one()
        set_password(session, user_id=user.id, password=PASSWORD, now=clock.now())
    session.commit()
    return world


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def sign_in(client, username: str, password: str = PASSWORD, next_url: str = "/"):
    form = client.get("/signin")
    return client.post(
        "/signin",
        data={
            "username": username,
            "password": password,
            "csrf_token": _csrf(form.text),
            "next": next_url,
        },
        follow_redirects=False,
    )


def test_given_no_session_when_opening_a_page_then_sent_to_sign_in_and_back(client, people):
    response = client.get("/?q=abc", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=%2F%3Fq%3Dabc"
    signed = sign_in(client, "operator", next_url="/?q=abc")
    assert signed.status_code == 303 and signed.headers["location"] == "/?q=abc"
    cookie = signed.headers["set-cookie"]
    assert "hotline_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie


def test_given_htmx_request_without_session_then_hx_redirect(client, people):
    response = client.get("/", headers={"HX-Request": "true"}, follow_redirects=False)
    assert response.headers["HX-Redirect"] == "/signin"


def test_given_next_to_another_site_then_ignored(client, people):
    signed = sign_in(client, "operator", next_url="//evil.example/x")
    assert signed.headers["location"] == "/"


def test_given_signed_in_then_chinese_by_default_and_english_switch(client, people):
    sign_in(client, "operator")
    page = client.get("/")
    assert "工单" in page.text and "退出" in page.text and 'lang="zh-CN"' in page.text
    client.post("/account/locale", data={"locale": "en", "csrf_token": _csrf(page.text)})
    page = client.get("/")
    assert "Tickets" in page.text and "Sign out" in page.text and 'lang="en"' in page.text
    client.cookies.clear()  # another browser: the account remembers the choice
    sign_in(client, "operator")
    assert "Sign out" in client.get("/").text


def test_given_wrong_password_then_401_with_the_same_words_as_an_unknown_user(
    client, people, delays
):
    wrong = sign_in(client, "operator", "Wrong-pass-1")
    unknown = sign_in(client, "nobody", "Wrong-pass-1")
    assert wrong.status_code == unknown.status_code == 401
    assert "用户名或密码错误" in wrong.text and "用户名或密码错误" in unknown.text
    assert "hotline_session" not in wrong.headers.get("set-cookie", "")


def test_given_five_failures_then_slowed_then_locked_until_admin_unlocks(
    client, people, session, delays
):
    for _ in range(5):
        sign_in(client, "water.handler", "Wrong-pass-1")
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]  # the fifth failure locks; the wait stays
    locked = sign_in(client, "water.handler")
    assert locked.status_code == 401 and "锁定" in locked.text
    user = session.scalars(select(User).where(User.username == "water.handler")).one()
    session.refresh(user)
    assert user.locked_until is not None
    from accounts.signin import unlock

    unlock(session, user_id=user.id)
    session.commit()
    assert sign_in(client, "water.handler").status_code == 303


def test_given_sign_in_form_without_its_csrf_token_then_refused(client, people):
    client.get("/signin")
    response = client.post(
        "/signin", data={"username": "operator", "password": PASSWORD, "csrf_token": "forged"}
    )
    assert response.status_code == 403


def test_given_post_without_csrf_token_then_refused_and_nothing_changed(client, people):
    sign_in(client, "operator")
    response = client.post("/signout", data={}, follow_redirects=False)
    assert response.status_code == 403 and "安全令牌" in response.text
    assert client.get("/", follow_redirects=False).status_code == 200  # still signed in
    forged = client.post("/signout", data={"csrf_token": "x" * 43}, follow_redirects=False)
    assert forged.status_code == 403


def test_given_post_from_another_origin_then_refused_even_with_the_token(client, people):
    sign_in(client, "operator")
    token = _csrf(client.get("/").text)
    response = client.post(
        "/signout",
        data={"csrf_token": token},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert response.status_code == 403


def test_given_htmx_header_token_then_accepted(client, people):
    sign_in(client, "operator")
    token = _csrf(client.get("/").text)
    response = client.post("/signout", headers={"X-CSRF-Token": token}, follow_redirects=False)
    assert response.status_code == 303


def test_given_sign_out_then_the_cookie_no_longer_works(client, people):
    sign_in(client, "operator")
    cookie = client.cookies.get("hotline_session")
    client.post("/signout", data={"csrf_token": _csrf(client.get("/").text)})
    client.cookies.set("hotline_session", cookie)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_given_sign_out_everywhere_then_other_browsers_signed_out(app, client, people):
    from fastapi.testclient import TestClient

    with TestClient(app) as other:
        sign_in(other, "operator")
        sign_in(client, "operator")
        client.post("/signout/everywhere", data={"csrf_token": _csrf(client.get("/").text)})
        assert other.get("/", follow_redirects=False).status_code == 303


def test_given_idle_longer_than_the_timeout_then_signed_out(client, people, clock):
    sign_in(client, "operator")
    clock.advance(timedelta(minutes=59))
    assert client.get("/", follow_redirects=False).status_code == 200
    clock.advance(timedelta(minutes=61))
    assert client.get("/", follow_redirects=False).status_code == 303


def test_given_password_change_then_new_one_works_and_old_one_not(client, people, delays):
    sign_in(client, "operator")
    token = _csrf(client.get("/account").text)
    weak = client.post(
        "/account/password",
        data={"csrf_token": token, "current": PASSWORD, "new": "short", "repeat": "short"},
    )
    assert weak.status_code == 422 and "至少需要 8 位" in weak.text
    changed = client.post(
        "/account/password",
        data={
            "csrf_token": token,
            "current": PASSWORD,
            "new": "New-pass-2026",
            "repeat": "New-pass-2026",
        },
    )
    assert changed.status_code == 200 and "密码已修改" in changed.text
    client.cookies.clear()
    assert sign_in(client, "operator").status_code == 401
    assert sign_in(client, "operator", "New-pass-2026").status_code == 303


def test_given_sign_ins_then_in_the_audit_trail_with_address(client, people, session, delays):
    sign_in(client, "operator", "Wrong-pass-1")
    sign_in(client, "operator")
    client.post("/signout", data={"csrf_token": _csrf(client.get("/").text)})
    entries = audit.entries(session, limit=10)
    assert [(e.action, e.outcome) for e in reversed(entries)] == [
        ("sign_in", "failed"),
        ("sign_in", "ok"),
        ("sign_out", "ok"),
    ]
    assert all(e.address == "testclient" and e.username == "operator" for e in entries)
    assert session.scalars(select(AuditEntry).where(AuditEntry.detail.is_not(None))).first()


def test_given_handler_then_the_start_page_lists_only_their_units_tickets(client, auth, people):
    water = post(client, auth("operator"), description=WATER_CUT).json()["ticket"]
    wage = post(client, auth("operator"), description="公司拖欠工资三个月").json()["ticket"]
    assert client.get(TICKETS, headers=auth("operator")).status_code == 200
    sign_in(client, "water.handler")
    page = client.get("/").text
    assert water["number"] in page and wage["number"] not in page
    client.cookies.clear()
    sign_in(client, "hrss.handler")
    page = client.get("/").text
    assert wage["number"] in page and water["number"] not in page


def test_given_search_by_htmx_then_only_the_results_block(client, auth, people):
    water = post(client, auth("operator"), description=WATER_CUT).json()["ticket"]
    sign_in(client, "operator")
    fragment = client.get("/", params={"q": water["number"]}, headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<section id="results"')
    assert water["number"] in fragment.text and "<html" not in fragment.text


def test_given_a_browser_at_a_missing_page_then_words_not_json(client, people):
    sign_in(client, "operator")
    page = client.get("/no/such/page", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "页面不存在" in page.text
    api = client.get("/no/such/page", headers={"Accept": "application/json"})
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"


def test_given_a_bad_query_on_a_page_then_words_and_400(client, people):
    sign_in(client, "operator")
    page = client.get("/", params={"q": "x" * 500}, headers={"Accept": "text/html"})
    assert page.status_code == 400 and "请求有误" in page.text
