"""The working calendar's years through the app, on both backends: a year is known only when
an administrator confirms it (audited, withdrawable); until then the page warns — from
1 December for next year too — and every deadline in that year carries "calendar not
confirmed" on the ticket page and in the inbox, counted all the same."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlmodel import col

from accounts.models import AuditEntry, User
from accounts.signin import set_password
from dispatch.models import CalendarYear
from tests.web.test_pages_signin import PASSWORD, _csrf, sign_in
from tests.web.test_tickets import WATER_CUT, post

WAGES = "公司拖欠工资三个月"

DECEMBER_2 = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


@pytest.fixture
def people(client, session, world, clock):
    for username in ("admin", "operator", "water.handler", "hrss.handler"):
        user = session.scalars(select(User).where(User.username == username)).one()
        set_password(session, user_id=user.id, password=PASSWORD, now=clock.now())
    session.commit()
    return world


def _mark(client, year: int, verb: str, note: str = ""):
    token = _csrf(client.get("/admin/calendar").text)
    return client.post(
        f"/admin/calendar/years/{year}/{verb}", data={"csrf_token": token, "note": note}
    )


def _audit(session, action: str) -> list[AuditEntry]:
    session.expire_all()
    return list(session.scalars(select(AuditEntry).where(col(AuditEntry.action) == action)))


def _warning(html: str) -> str:
    match = re.search(r'id="confirm-warning">([^<]*)<', html)
    return match.group(1) if match else ""


def test_given_november_then_only_this_year_is_asked_for_and_from_december_next_year_too(
    client, people, clock
):
    sign_in(client, "admin")
    assert "2026" in _warning(client.get("/admin/calendar").text)
    assert "2027" not in _warning(client.get("/admin/calendar").text)  # 27 November

    clock.set(DECEMBER_2)
    client.cookies.clear()  # five days on, the session has timed out
    sign_in(client, "admin")

    page = client.get("/admin/calendar").text
    assert "2026" in _warning(page) and "2027" in _warning(page)
    assert 'id="year-2026"' in page and 'id="year-2027"' in page
    assert "国庆节" in page and "春节" in page  # chinese-calendar's holidays of both years


def test_given_an_admin_confirms_a_year_then_it_is_known_audited_and_can_be_withdrawn(
    client, people, session, clock
):
    clock.set(DECEMBER_2)
    sign_in(client, "admin")

    confirmed = _mark(client, 2027, "confirm", note="国办发明电〔2026〕7号")

    assert confirmed.status_code == 200  # after the redirect
    assert "2027" not in _warning(confirmed.text) and "2026" in _warning(confirmed.text)
    session.expire_all()
    row = session.get(CalendarYear, 2027)
    admin = session.scalars(select(User).where(User.username == "admin")).one()
    assert (row.known, row.marked_by, row.note) == (True, admin.id, "国办发明电〔2026〕7号")
    assert row.marked_at == DECEMBER_2
    [entry] = _audit(session, "admin.calendar.confirm")
    assert (entry.target, entry.outcome) == ("year:2027", "ok")

    again = _mark(client, 2027, "confirm")
    assert again.status_code == 409 and "国办发明电" in again.text  # the page, with the refusal
    assert [e.outcome for e in _audit(session, "admin.calendar.confirm")] == ["ok", "refused"]

    withdrawn = _mark(client, 2027, "withdraw", note="调休安排有误")
    assert withdrawn.status_code == 200 and "2027" in _warning(withdrawn.text)
    session.expire_all()
    assert session.get(CalendarYear, 2027).known is False
    assert len(_audit(session, "admin.calendar.withdraw")) == 1
    assert _mark(client, 2027, "withdraw").status_code == 409


def test_given_bad_input_then_refused_in_words_and_nothing_kept(client, people, session):
    sign_in(client, "admin")
    client.post("/account/locale", data={"locale": "en", "csrf_token": _csrf(client.get("/").text)})
    too_long = _mark(client, 2026, "confirm", note="长" * 501)
    assert too_long.status_code == 409 and "at most 500 characters" in too_long.text
    nothing = _mark(client, 2026, "withdraw")
    assert nothing.status_code == 409 and "nothing to withdraw" in nothing.text
    assert _mark(client, 1999, "confirm").status_code == 409
    session.expire_all()
    assert session.scalars(select(CalendarYear)).all() == []


FLAGGED = re.compile(r'<b>([^<]+)</b>[^<]*<span class="due">[^<]*</span> <abbr class="unconfirmed"')


def _flagged(html: str) -> list[str]:
    """The clocks on the page marked "calendar not confirmed", by name."""
    return FLAGGED.findall(html)


def test_given_an_unconfirmed_year_then_its_working_day_deadlines_are_flagged_until_confirmed(
    client, auth, people
):
    wages = post(client, auth("operator"), description=WAGES).json()["ticket"]
    water = post(client, auth("operator"), description=WATER_CUT).json()["ticket"]
    sign_in(client, "hrss.handler")
    # general policy: sign-for in hours (not flagged), reply and close in working days
    assert _flagged(client.get(f"/tickets/{wages['id']}").text) == ["回复", "办结"]
    assert _flagged(client.get("/inbox").text) == ["回复", "办结"]
    client.cookies.clear()
    sign_in(client, "water.handler")
    assert _flagged(client.get(f"/tickets/{water['id']}").text) == []  # 24/7 clocks only
    due = client.get(f"/api/v1/tickets/{wages['id']}", headers=auth("operator")).json()

    client.cookies.clear()
    sign_in(client, "admin")
    for year in (2026, 2027):
        _mark(client, year, "confirm")
    client.cookies.clear()
    sign_in(client, "hrss.handler")

    assert _flagged(client.get(f"/tickets/{wages['id']}").text) == []
    assert _flagged(client.get("/inbox").text) == []
    # confirming moved no deadline: the same ticket, the same clocks
    assert client.get(f"/api/v1/tickets/{wages['id']}", headers=auth("operator")).json() == due


def _waiting(client) -> str:
    match = re.search(r'id="nav-count-admin-calendar"[^>]*>(\d+)<', client.get("/nav/counts").text)
    assert match, "no calendar count in the navigation"
    return match.group(1)


def test_given_years_to_confirm_then_every_admin_page_counts_them_at_the_apps_clock(
    client, people, clock
):
    sign_in(client, "admin")
    assert 'id="nav-count-admin-calendar"' in client.get("/admin").text
    assert _waiting(client) == "1"  # 27 November: this year

    clock.set(datetime(2026, 11, 30, 16, 30, tzinfo=UTC))  # 00:30 on 1 December in Shanghai
    client.cookies.clear()
    sign_in(client, "admin")
    assert _waiting(client) == "2"  # and next year, by the centre's date

    _mark(client, 2026, "confirm")
    _mark(client, 2027, "confirm")
    assert _waiting(client) == "0"
