"""The public site through the app, on both backends: no sign-in anywhere under /public/, a
bad form answered 422 naming the field with everything typed kept, photos refused by size
and type, the same form sent twice making one ticket, the rate limits, a wrong lookup code
showing nothing (and too many of them refused), the rating, and the list and GeoJSON
without confidential requests or personal data."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from sqlalchemy import func, select

from core.clock import FrozenClock
from core.settings import Settings
from dispatch import handling, review
from dispatch.models import Assignment
from hotline import public, public_limits
from tickets.models import Status, Ticket
from web.app import create_app
from web.pages.public import PHOTO_MAX_BYTES

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
FORM = {
    "category": "090104",
    "description": "幸福小区停水三天了，请尽快恢复供水",
    "address": "榆阳区幸福小区3号楼",
    "latitude": "38.28531",
    "longitude": "109.73467",
    "phone": "13800001234",
}


@pytest.fixture
def app(session_factory, clock: FrozenClock, tmp_path):
    return create_app(
        settings=Settings(environment="test", data_dir=tmp_path),
        session_factory=session_factory,
        clock=clock,
    )


def _form_id(client) -> str:
    page = client.get("/public/new")
    assert page.status_code == 200
    match = re.search(r'name="form_id" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def _send(client, form=FORM, files=None, form_id=None, **headers):
    data = {**form, "form_id": form_id or _form_id(client)}
    return client.post("/public/new", data=data, files=files or [], headers=headers)


def _keys(html: str) -> tuple[str, str]:
    number = re.search(r'id="ticket-number">([^<]+)<', html)
    code = re.search(r'id="lookup-code"[^>]*>([^<]+)<', html)
    assert number and code, html
    return number.group(1), code.group(1)


def _count(session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Ticket))


def test_given_no_session_then_every_public_page_answers_in_chinese(client, world):
    for path in ("/public/new", "/public/track", "/public/requests"):
        page = client.get(path, follow_redirects=False)
        assert page.status_code == 200, path
        assert 'lang="zh-CN"' in page.text and "/signin" not in page.text
    assert "提交诉求" in client.get("/public/new").text
    assert client.get("/public", follow_redirects=False).headers["location"] == "/public/new"
    client.cookies.set("hotline_locale", "en")
    assert "Make a request" in client.get("/public/new").text


def test_given_a_good_form_then_the_number_and_code_at_once_and_the_ticket_dispatched(
    client, world, session, app
):
    answer = _send(client, files=[("photos", ("现场.png", PNG, "image/png"))])
    assert answer.status_code == 200
    number, code = _keys(answer.text)
    assert code == public.lookup_code(app.state.settings.secret_key, number)
    session.expire_all()
    ticket = session.scalars(select(Ticket).where(Ticket.number == number)).one()
    assert ticket.channel == "web" and ticket.status == Status.dispatched
    assert ticket.caller_phone == "13800001234"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"category": "nonsense"}, "category"),
        ({"description": "水"}, "description"),
        ({"description": "水" * 2001}, "description"),
        ({"address": ""}, "address"),
        ({"latitude": "91", "longitude": "109.7"}, "location"),
        ({"latitude": "38.2", "longitude": ""}, "location"),
        ({"latitude": "nan", "longitude": "109.7"}, "location"),
        ({"phone": ""}, "phone"),
        ({"phone": "call me"}, "phone"),
    ],
)
def test_given_a_bad_field_then_422_names_it_and_keeps_everything_typed(
    client, world, session, change, field
):
    sent = {**FORM, **change}
    form_id = _form_id(client)
    answer = _send(client, form=sent, form_id=form_id)
    assert answer.status_code == 422
    page = unescape(answer.text)
    assert re.findall(r'data-field="(\w+)"', answer.text) == [field]
    for name, value in sent.items():
        if value and name != "category":
            assert value in page, name
    assert f'value="{sent["category"]}" selected' in page or sent["category"] == "nonsense"
    assert f'name="form_id" value="{form_id}"' in answer.text
    assert _count(session) == 0


def test_given_a_bad_field_and_a_good_photo_then_told_to_choose_the_photo_again(
    client, world, session
):
    answer = _send(
        client, form={**FORM, "address": ""}, files=[("photos", ("a.png", PNG, "image/png"))]
    )
    assert answer.status_code == 422
    assert re.findall(r'data-field="(\w+)"', answer.text) == ["address", "photos"]
    assert "请重新选择" in answer.text and _count(session) == 0


def test_given_anonymous_then_no_phone_is_needed_and_none_kept(client, world, session):
    answer = _send(client, form={**FORM, "phone": "", "anonymous": "on"})
    assert answer.status_code == 200
    number, _ = _keys(answer.text)
    session.expire_all()
    ticket = session.scalars(select(Ticket).where(Ticket.number == number)).one()
    assert ticket.caller_phone is None and ticket.confidential


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ([("photos", ("big.png", PNG + b"\x00" * PHOTO_MAX_BYTES, "image/png"))], "5 MB"),
        ([("photos", ("virus.exe", b"MZ\x90\x00", "application/octet-stream"))], "JPEG"),
        ([("photos", ("fake.png", b"<svg onload=alert(1)>", "image/png"))], "JPEG"),
        ([("photos", (f"p{n}.png", PNG, "image/png")) for n in range(4)], "3"),
    ],
)
def test_given_a_refused_photo_then_422_on_photos_and_no_ticket(
    client, world, session, files, words
):
    answer = _send(client, files=files)
    assert answer.status_code == 422
    assert re.findall(r'data-field="(\w+)"', answer.text) == ["photos"]
    assert words in answer.text and FORM["description"] in answer.text
    assert _count(session) == 0


def test_given_a_body_larger_than_three_photos_then_413_unread(client, world, session, monkeypatch):
    monkeypatch.setattr("web.pages.public.MAX_BODY", 4096)
    answer = _send(client, files=[("photos", ("a.png", PNG + b"\x00" * 5000, "image/png"))])
    assert answer.status_code == 413 and 'data-field="photos"' in answer.text
    assert _count(session) == 0


def test_given_the_same_form_sent_twice_then_one_ticket(client, world, session):
    form_id = _form_id(client)
    first = _send(client, form_id=form_id)
    again = _send(client, form_id=form_id)
    assert first.status_code == again.status_code == 200
    assert _keys(first.text) == _keys(again.text)
    assert _count(session) == 1
    other = _send(client)
    assert _keys(other.text)[0] != _keys(first.text)[0] and _count(session) == 2
    # back to the sent form, changed and sent again: the first one stands, nothing is lost
    changed = _send(client, form={**FORM, "description": "路灯坏了一个月"}, form_id=form_id)
    assert changed.status_code == 409 and "路灯坏了一个月" in changed.text
    assert f'value="{form_id}"' not in changed.text and _count(session) == 2


def test_given_nul_characters_in_a_multipart_form_then_dropped_not_a_server_error(
    client, world, session
):
    answer = _send(
        client,
        form={**FORM, "description": "停水\x00三天了", "address": "幸福\x00小区"},
        files=[("photos", ("a\x00.png", PNG, "image/png"))],
    )
    assert answer.status_code == 200, re.findall(r'data-field="(\w+)"[^>]*>([^<]*)<', answer.text)
    session.expire_all()
    ticket = session.scalars(select(Ticket)).one()
    assert (ticket.description, ticket.address) == ("停水三天了", "幸福小区")


def test_given_a_post_from_another_site_then_refused(client, world, session):
    answer = _send(client, Origin="https://evil.example")
    assert answer.status_code == 403 and _count(session) == 0


def test_given_too_many_submissions_then_429_per_address_and_per_phone(
    client, world, session, app, clock
):
    app.state.public_limits = public_limits.Limits(
        per_address=public_limits.Limiter(limit=3, window=timedelta(hours=1)),
        per_phone=public_limits.Limiter(limit=2, window=timedelta(days=1)),
    )
    assert _send(client).status_code == 200
    assert _send(client).status_code == 200
    refused = _send(client)  # a third from the same phone
    assert refused.status_code == 429 and FORM["description"] in refused.text
    assert _send(client, form={**FORM, "phone": "13900000000"}).status_code == 200
    assert _send(client, form={**FORM, "phone": "13700000000"}).status_code == 429  # address
    assert _count(session) == 3
    clock.advance(hours=1, seconds=1)
    assert _send(client, form={**FORM, "phone": "13700000000"}).status_code == 200


def _track(client, number, code="", last4=""):
    return client.post("/public/track", data={"number": number, "code": code, "last4": last4})


def test_given_number_and_code_then_the_timeline_and_a_wrong_code_shows_nothing(
    client, world, session, app
):
    number, code = _keys(_send(client).text)
    found = _track(client, number, code=code.lower())
    assert found.status_code == 200
    assert "自来水公司" in found.text and 'id="public-status"' in found.text
    assert "13800001234" not in found.text and "幸福小区停水" not in found.text
    by_phone = _track(client, number, last4="1234")
    assert by_phone.status_code == 200 and "自来水公司" in by_phone.text
    wrong = _track(client, number, code="ABCDEF" if code != "ABCDEF" else "ABCDEG")
    assert wrong.status_code == 404
    assert "自来水公司" not in wrong.text and "public-status" not in wrong.text
    assert _track(client, "20991231-000001", code=code).status_code == 404


def test_given_many_wrong_codes_then_the_address_is_refused_even_the_right_one(
    client, world, session, app
):
    app.state.public_limits = public_limits.Limits(
        failed_lookups=public_limits.Limiter(limit=3, window=timedelta(minutes=15))
    )
    number, code = _keys(_send(client).text)
    for guess in ("AAAAAA", "BBBBBB", "CCCCCC"):
        assert _track(client, number, code=guess).status_code == 404
    blocked = _track(client, number, code=code)
    assert blocked.status_code == 429 and "自来水公司" not in blocked.text


def test_given_an_approved_reply_then_the_sender_rates_and_dissatisfied_reopens(
    client, world, session, clock
):
    number, code = _keys(_send(client).text)
    session.expire_all()
    ticket = session.scalars(select(Ticket).where(Ticket.number == number)).one()
    assert 'name="satisfaction"' not in _track(client, number, code=code).text
    lead = session.scalars(
        select(Assignment).where(Assignment.ticket_id == ticket.id, Assignment.role == "lead")
    ).one()
    handling.sign(session, assignment_id=lead.id, actor=world.handlers["WATER"], now=clock.now())
    handling.reply(
        session,
        assignment_id=lead.id,
        text="已恢复供水",
        actor=world.handlers["WATER"],
        now=clock.now(),
    )
    review.review_reply(
        session, ticket_id=ticket.id, approve=True, actor=world.staff["dispatcher"], now=clock.now()
    )
    session.commit()
    page = _track(client, number, code=code)
    assert "已恢复供水" in page.text and 'name="satisfaction"' in page.text
    wrong = client.post(
        "/public/track/rate",
        data={"number": number, "code": "ZZZZZZ", "satisfaction": "dissatisfied"},
    )
    assert wrong.status_code == 404
    rated = client.post(
        "/public/track/rate",
        data={"number": number, "code": code, "satisfaction": "dissatisfied", "comment": "没水"},
    )
    assert rated.status_code == 200 and "重新" in rated.text
    session.expire_all()
    ticket = session.get(Ticket, ticket.id)
    assert ticket.status == Status.dispatched and ticket.reopen_count == 1
    assert ticket.satisfaction == "dissatisfied"
    again = client.post(
        "/public/track/rate", data={"number": number, "code": code, "satisfaction": "satisfied"}
    )
    assert again.status_code == 200 and session.get(Ticket, ticket.id).reopen_count == 1


def test_given_confidential_and_anonymous_requests_then_absent_from_the_list_and_geojson(
    client, world, session
):
    _send(client)
    _send(client, form={**FORM, "confidential": "on", "latitude": "38.5", "longitude": "109.5"})
    _send(client, form={**FORM, "anonymous": "on", "latitude": "38.6", "longitude": "109.6"})
    assert _count(session) == 3
    feed = client.get("/public/requests.geojson")
    assert feed.status_code == 200 and feed.headers["content-type"] == "application/geo+json"
    features = feed.json()["features"]
    assert [f["geometry"]["coordinates"] for f in features] == [[109.73, 38.29]]
    page = client.get("/public/requests")
    assert page.text.count('<span class="pub-cat">') == 1
    for text in (feed.text, page.text):
        for private in ("13800001234", "幸福小区", "停水三天", "109.5", "38.6", "109.73467"):
            assert private not in text
