"""The seats admin page through the app, on both backends: only admins see it; a new seat's
password is shown once on the answer to the post and works (its digest is what is stored);
a phone's registration shows; a new password ends the registrations; disable refuses the
seat; bad input is refused with the form kept; every action is in the audit trail. And the
whole flow in Chromium with a phone (sipp) registering with the password read off the page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect
from sqlalchemy import select
from sqlmodel import col

from accounts.models import AuditEntry, User
from accounts.signin import set_password
from hotline.calls.seats import DbSeatStore, list_seats
from telephony.models import Seat, SeatRegistration
from telephony.sip_registrar import seat_ha1
from tests.telephony.sip_peers import free_udp_port, output, run_sipp, start_edge
from tests.web.browser import shot
from tests.web.browser import sign_in as sign_in_browser
from tests.web.test_pages_signin import _csrf, sign_in

PASSWORD = "Hotline-12345"
REALM = "hotline12345"  # the app's Settings(environment="test"): REALM


@pytest.fixture
def admin(client, session, world, clock):
    for username in ("admin", "operator"):
        user = session.scalars(select(User).where(User.username == username)).one()
        set_password(session, user_id=user.id, password=PASSWORD, now=clock.now())
    session.commit()
    assert sign_in(client, "admin").status_code == 303
    return client


def _post(client, path, data=None):
    token = _csrf(client.get("/admin/seats").text)
    return client.post(path, data={"csrf_token": token, **(data or {})}, follow_redirects=False)


def _shown_password(html: str) -> str:
    match = re.search(r'<code class="secret">([^<]+)</code>', html)
    assert match, html[-3000:]
    return match.group(1)


def _seat(session, extension: str) -> Seat:
    session.expire_all()
    return session.scalars(select(Seat).where(col(Seat.extension) == extension)).one()


def _actions(session) -> list[tuple[str, str | None, str]]:
    session.expire_all()
    rows = session.scalars(
        select(AuditEntry)
        .where(col(AuditEntry.action).like("admin.seat.%"))
        .order_by(col(AuditEntry.id))
    )
    return [(r.action, r.target, r.outcome) for r in rows]


def test_given_admin_when_creating_a_seat_then_password_shown_once_and_its_digest_stored(
    admin, session
):
    answer = _post(admin, "/admin/seats", {"extension": "1001", "name": "desk 1"})

    assert answer.status_code == 200
    password = _shown_password(answer.text)
    seat = _seat(session, "1001")
    assert seat.display_name == "desk 1" and seat.enabled
    assert (seat.ha1_md5, seat.ha1_sha256) == seat_ha1("1001", REALM, password)
    page = admin.get("/admin/seats").text
    assert 'id="seat-1001"' in page and password not in page
    assert _actions(session) == [("admin.seat.create", "seat:1001", "ok")]


@pytest.mark.parametrize("bad", ["1", "desk", "12345678901234567"])
def test_given_bad_extension_then_refused_with_the_form_kept_and_audited(admin, session, bad):
    answer = _post(admin, "/admin/seats", {"extension": bad, "name": "desk 9"})

    assert answer.status_code == 422
    assert "2 to 16 digits" in answer.text and 'value="desk 9"' in answer.text
    assert _actions(session) == [("admin.seat.create", f"seat:{bad}", "refused")]
    assert session.scalars(select(Seat)).all() == []


def test_given_taken_extension_then_refused(admin, session):
    _post(admin, "/admin/seats", {"extension": "1001"})

    again = _post(admin, "/admin/seats", {"extension": "1001"})

    assert again.status_code == 422 and "exists already" in again.text


def test_registered_phone_shows_and_a_new_password_ends_its_registration(admin, session, clock):
    first = _shown_password(_post(admin, "/admin/seats", {"extension": "1001"}).text)
    now = clock.now()
    session.add(
        SeatRegistration.model_validate(
            {
                "extension": "1001",
                "contact": "sip:1001@10.0.0.5:5060",
                "received_host": "192.0.2.10",
                "received_port": 40000,
                "expires_at": now + timedelta(seconds=300),
                "call_id": "c1",
                "cseq": 1,
                "user_agent": "Yealink T46U",
                "updated_at": now,
            }
        )
    )
    session.commit()
    row = re.search(r'<tr id="seat-1001">.*?</tr>', admin.get("/admin/seats").text, re.S)
    assert row and "已注册" in row.group(0) and "192.0.2.10:40000" in row.group(0)  # registered
    assert "Yealink T46U" in row.group(0)

    answer = _post(admin, "/admin/seats/1001/password")

    assert answer.status_code == 200
    second = _shown_password(answer.text)
    assert second != first
    assert _seat(session, "1001").ha1_md5 == seat_ha1("1001", REALM, second)[0]
    assert not list_seats(session=session, now=clock.now())[0].registered


def test_disable_refuses_the_seat_and_unknown_seats_are_404(admin, session):
    _post(admin, "/admin/seats", {"extension": "1001"})

    answer = _post(admin, "/admin/seats/1001/disable")

    assert answer.status_code == 303 and answer.headers["location"].endswith("done=seat_disabled")
    assert not _seat(session, "1001").enabled
    page = admin.get(answer.headers["location"]).text
    assert "坐席分机已停用" in page  # "Seat disabled", on the default Chinese page
    assert _post(admin, "/admin/seats/1999/disable").status_code == 404
    assert _post(admin, "/admin/seats/1999/password").status_code == 404
    assert [a[0] for a in _actions(session)] == [
        "admin.seat.create",
        "admin.seat.disable",
        "admin.seat.disable",
        "admin.seat.reset_password",
    ]


def test_given_operator_then_the_seats_page_is_refused(client, admin):
    client.cookies.clear()
    assert sign_in(client, "operator").status_code == 303

    assert client.get("/admin/seats").status_code == 403
    token = _csrf(client.get("/account").text)
    refused = client.post("/admin/seats", data={"csrf_token": token, "extension": "1001"})
    assert refused.status_code == 403
    assert client.post("/admin/seats/1001/disable", data={"csrf_token": token}).status_code == 403


def test_in_chromium_admin_makes_a_seat_a_phone_registers_with_it_then_reset_and_disable(
    site, page
):
    """The whole flow: the seat made on the page, its password read off the page and given
    to a phone (sipp, digest) registering with a real edge on the site's database, the page
    showing it registered; a new password ends that registration; disable."""
    sign_in_browser(page, site, "admin")
    page.goto(f"{site.url}/admin/seats")
    page.fill("#new-seat input[name=extension]", "1001")
    page.fill("#new-seat input[name=name]", "一号席")
    page.click("#new-seat button[type=submit]")
    password = page.locator("#seat-password code.secret").inner_text().strip()
    assert len(password) == 16

    edge = start_edge(seats=DbSeatStore(site.session_factory))
    try:
        port = free_udp_port()
        result = run_sipp(
            "uac_register.xml",
            target=edge.target,
            service="1001",
            port=port,
            keys={"contact": f"<sip:1001@127.0.0.1:{port}>", "expires": 300},
            extra=["-au", "1001", "-ap", password],
            timeout=5,
        )
        assert result.returncode == 0, output(result)
    finally:
        edge.edge.stop()

    page.goto(f"{site.url}/admin/seats")
    row = page.locator("#seat-1001")
    expect(row.locator(".badge.ok")).to_be_visible()
    expect(row).to_contain_text(f"127.0.0.1:{port}")
    expect(row).to_contain_text("sipp seat")
    expect(row).to_contain_text("一号席")
    shot(page, "admin-seats")

    row.locator("form[action$='/password'] button").click()
    second = page.locator("#seat-password code.secret").inner_text().strip()
    assert second != password
    expect(page.locator("#seat-1001 .badge.ok")).to_have_count(0)

    page.locator("#seat-1001 form[action$='/disable'] button").click()
    expect(page.locator("#seat-1001 .badge.muted")).to_be_visible()
    expect(page.locator("#seat-1001 form[action$='/disable']")).to_have_count(0)


def test_given_a_seat_of_another_realm_then_the_page_says_it_needs_a_new_password(admin, session):
    _post(admin, "/admin/seats", {"extension": "1001"})
    seat = _seat(session, "1001")
    seat.realm = "old-centre.test"
    session.add(seat)
    session.commit()

    row = re.search(r'<tr id="seat-1001">.*?</tr>', admin.get("/admin/seats").text, re.S)

    assert row and 'class="badge warn"' in row.group(0) and "old-centre.test" in row.group(0)
