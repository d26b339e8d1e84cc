"""The department inbox (``/inbox``) through the app, on both backends: only the unit's own
work, nearest deadline first, the filters (state, clock colour, text, in my charge), the
htmx results block, paging, and the escalations to acknowledge."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from accounts.models import AuditEntry, Role, User
from dispatch import escalation
from dispatch.models import Assignment, Escalation
from tests.web.test_pages_signin import _csrf, sign_in
from tests.web.test_pages_ticket import app, staff  # noqa: F401 - fixtures
from tests.web.test_tickets import WATER_CUT, post
from web.pages import nav
from web.pages.nav import NavItem

WAGES = "公司拖欠工资三个月"


@pytest.fixture
def three(client, auth, staff, clock):
    """Two water tickets an hour apart and one wage ticket (HRSS)."""
    first = post(client, auth("operator"), description=WATER_CUT, address="幸福小区3栋").json()
    clock.advance(hours=1)
    second = post(client, auth("operator"), description="光明小区停水一天了，请尽快恢复供水").json()
    wages = post(client, auth("operator"), description=WAGES).json()
    return first["ticket"], second["ticket"], wages["ticket"]


def _rows(html: str) -> list[str]:
    body = html.split('<section id="results"', 1)[1].split("</section>", 1)[0]
    return [part.split('"', 1)[0] for part in body.split('<a href="/tickets/')[1:]]


def test_given_water_handler_then_only_water_work_nearest_deadline_first(client, three):
    first, second, wages = three
    sign_in(client, "water.handler")
    page = client.get("/inbox")
    assert page.status_code == 200
    assert _rows(page.text) == [str(first["id"]), str(second["id"])]
    assert wages["number"] not in page.text
    assert page.text.count('class="clock c-green"') == 6  # sign, reply, close × 2


def test_given_filters_then_only_the_matching_work(client, session, three):
    first, second, _ = three
    sign_in(client, "water.handler")
    assert _rows(client.get("/inbox", params={"q": "幸福小区"}).text) == [str(first["id"])]
    assert _rows(client.get("/inbox", params={"q": second["number"]}).text) == [str(second["id"])]
    assert _rows(client.get("/inbox", params={"colour": "red"}).text) == []
    assert _rows(client.get("/inbox", params={"colour": "green"}).text) == [
        str(first["id"]),
        str(second["id"]),
    ]
    assert _rows(client.get("/inbox", params={"state": "signed"}).text) == []
    assert _rows(client.get("/inbox", params={"mine": "1"}).text) == []
    me = session.scalars(select(User).where(User.username == "water.handler")).one()
    lead = session.scalars(
        select(Assignment).where(Assignment.ticket_id == second["id"], Assignment.role == "lead")
    ).one()
    page = client.get(f"/tickets/{second['id']}")
    client.post(
        f"/tickets/{second['id']}/assign",
        data={"csrf_token": _csrf(page.text), "assignment_id": lead.id, "assignee_id": me.id},
    )
    assert _rows(client.get("/inbox", params={"mine": "1"}).text) == [str(second["id"])]
    newest = client.get("/inbox", params={"sort": "received"}).text
    assert _rows(newest) == [str(second["id"]), str(first["id"])]
    # unknown values are ignored, not errors
    assert (
        client.get("/inbox", params={"state": "x", "colour": "x", "sort": "x"}).status_code == 200
    )


def test_given_htmx_filter_then_only_the_results_block(client, three):
    sign_in(client, "water.handler")
    fragment = client.get("/inbox", params={"q": "幸福"}, headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<section id="results"')
    assert "<html" not in fragment.text


def test_given_the_live_stream_asks_for_the_escalations_then_only_that_block(client, three):
    sign_in(client, "water.handler")
    part = client.get("/inbox", headers={"HX-Request": "true", "HX-Target": "escalations"})
    assert part.text.lstrip().startswith("<section") and 'id="escalations"' in part.text
    assert 'id="results"' not in part.text and "<html" not in part.text


def test_given_centre_staff_then_the_inbox_is_not_for_them(client, three):
    sign_in(client, "operator")
    assert client.get("/inbox").status_code == 403


def test_given_a_chase_then_red_first_and_acknowledged_only_by_the_unit(
    client, session, session_factory, clock, three
):
    first, _, _ = three
    lead = session.scalars(
        select(Assignment).where(Assignment.ticket_id == first["id"], Assignment.role == "lead")
    ).one()
    clock.advance(lead.sign_due_at - clock.now() + timedelta(minutes=5))
    escalation.sweep(session_factory, now=clock.now())
    sign_in(client, "water.handler")
    page = client.get("/inbox").text
    assert 'class="clock c-red"' in page and "催办" in page
    assert _rows(client.get("/inbox", params={"colour": "red"}).text)[0] == str(first["id"])
    step = session.scalars(
        select(Escalation).where(Escalation.assignment_id == lead.id).order_by(Escalation.id.desc())
    ).first()
    client.cookies.clear()
    sign_in(client, "hrss.handler")
    token = _csrf(client.get("/inbox").text)
    refused = client.post(
        f"/inbox/escalations/{step.id}/ack",
        data={"csrf_token": token},
        headers={"Accept": "text/html"},
    )
    assert refused.status_code == 404
    client.cookies.clear()
    sign_in(client, "water.handler")
    token = _csrf(client.get("/inbox").text)
    done = client.post(
        f"/inbox/escalations/{step.id}/ack", data={"csrf_token": token}, follow_redirects=False
    )
    assert done.status_code == 303
    session.expire_all()
    assert session.get(Escalation, step.id).acknowledged_at is not None
    outcomes = sorted(
        e.outcome
        for e in session.scalars(select(AuditEntry).where(AuditEntry.action == "escalation.ack"))
    )
    assert outcomes == ["ok", "refused"]


def test_given_many_tickets_then_paged_25_at_a_time(client, auth, staff):
    for n in range(27):
        post(client, auth("operator"), description=f"{WATER_CUT}（{n}号楼）")
    sign_in(client, "water.handler")
    first = client.get("/inbox").text
    assert len(_rows(first)) == 25 and "第 1 / 2 页" in first
    second = client.get("/inbox", params={"page": "2"}).text
    assert len(_rows(second)) == 2
    assert not set(_rows(first)) & set(_rows(second))


def test_given_the_clock_moved_then_the_navigation_counts_at_the_apps_time(
    client, three, clock, monkeypatch
):
    """A count that depends on time (a window, a deadline) is taken at the app's clock, as
    the pages are."""
    seen = []

    def overdue(session, person, now):
        seen.append(now)
        return 7

    monkeypatch.setattr(nav, "_ITEMS", list(nav._ITEMS))
    nav.register(NavItem("/test-overdue", "Inbox", frozenset({Role.handler}), count=overdue))
    clock.advance(days=400)
    sign_in(client, "water.handler")

    counts = client.get("/nav/counts").text

    assert seen == [clock.now()]
    assert re.search(r'id="nav-count-test-overdue"[^>]*>7<', counts)
    assert re.search(r'id="nav-count-inbox"[^>]*>2<', counts)  # the two water tickets
