"""What the centre keeps of an Open311 POST's optional fields, through the app on both
backends: the name and phone on the ticket, the e-mail, the client's account id and the
media link on its record (the dispatcher sees them, the link opens in a new tab without a
referrer), the device id not at all; none of them in GET requests (XML and JSON), the
public list or the GeoJSON; a media_url that is not a plain http(s) link to a host is
refused (400), and an accepted one is never fetched by the server."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from collections.abc import Iterator

import pytest
from sqlmodel import select

from hotline.open311 import clients
from hotline.open311.requests import ACTOR, SUBMITTED
from tests.web.test_open311_api import _errors_json, _errors_xml
from tests.web.test_pages_queues import staff  # noqa: F401
from tests.web.test_pages_signin import sign_in
from tickets.models import Ticket, TicketEvent

V2 = "/open311/v2"
FIELDS = {
    "service_code": "040101",
    "address_string": "榆林市榆阳区新建路",
    "description": "工地老板拖欠工资三个月",
    "first_name": "三丰",
    "last_name": "张",
    "phone": "13812345678",
    "email": "zhang.sanfeng@example.org",
    "device_id": "a1b2c3d4-device-0001",
    "account_id": "app-user-778899",
    "media_url": "https://img.example.org/photos/778899.jpg?size=large",
}
PERSONAL = (
    "13812345678",
    "张三丰",
    "三丰",
    "zhang.sanfeng@example.org",
    "a1b2c3d4-device-0001",
    "app-user-778899",
    "img.example.org",
)


@pytest.fixture
def key(session, world, clock) -> str:
    _, made = clients.issue(session, name="市民 App", actor="admin:test", now=clock.now())
    session.commit()
    return made


def _post(client, key: str, fmt: str = "json", **changes: str):
    return client.post(f"{V2}/requests.{fmt}", data={**FIELDS, "api_key": key, **changes})


def _filed(session, number: str) -> tuple[Ticket, list[TicketEvent]]:
    session.expire_all()
    ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
    events = list(session.exec(select(TicketEvent).where(TicketEvent.ticket_id == ticket.id)))
    return ticket, events


def test_given_every_field_then_contact_kept_for_staff_and_device_id_dropped(
    client, session, world, key
):
    response = _post(client, key)
    assert response.status_code == 201, response.text
    number = response.json()[0]["service_request_id"]
    ticket, events = _filed(session, number)
    assert (ticket.caller_name, ticket.caller_phone) == ("张三丰", "13812345678")
    assert ticket.description == "工地老板拖欠工资三个月"  # the link is not in the text
    (kept,) = [e for e in events if e.data.get("kind") == SUBMITTED]
    assert kept.actor == ACTOR
    assert kept.data == {
        "kind": SUBMITTED,
        "client_id": kept.data["client_id"],
        "client": "市民 App",
        "email": "zhang.sanfeng@example.org",
        "account_id": "app-user-778899",
        "media_url": "https://img.example.org/photos/778899.jpg?size=large",
    }
    # the device id is nowhere: not a field, not on any event
    assert FIELDS["device_id"] not in repr(ticket.model_dump())
    assert all(FIELDS["device_id"] not in repr(e.data) for e in events)


def test_given_a_filed_request_then_no_contact_detail_in_get_or_public_pages(
    client, session, world, key
):
    number = _post(client, key).json()[0]["service_request_id"]
    for path in (
        f"{V2}/requests/{number}.json",
        f"{V2}/requests/{number}.xml",
        f"{V2}/requests.json?service_request_id={number}",
        f"{V2}/requests.xml",
        "/public/requests",
        "/public/requests.geojson",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert number in response.text or path.startswith("/public")
        for personal in PERSONAL:
            assert personal not in response.text, (path, personal)
    (row,) = client.get(f"{V2}/requests/{number}.json").json()
    assert row["media_url"] is None


def test_given_a_media_link_then_the_dispatcher_opens_it_from_the_ticket_page(
    client, session, staff, key
):
    number = _post(client, key).json()[0]["service_request_id"]
    ticket, _ = _filed(session, number)
    sign_in(client, "dispatcher")
    page = client.get(f"/tickets/{ticket.id}")
    assert page.status_code == 200
    link = page.text.split('class="media-link"')[1].split(">")[0]
    assert 'href="https://img.example.org/photos/778899.jpg?size=large"' in link
    assert 'target="_blank"' in link and 'rel="noopener noreferrer nofollow"' in link
    assert 'href="mailto:zhang.sanfeng@example.org"' in page.text


@pytest.mark.parametrize(
    ("media_url", "problem"),
    [
        ("javascript:alert(1)", "media_url must be an http(s) URL"),
        ("ftp://files.example.org/a.jpg", "media_url must be an http(s) URL"),
        ("file:///etc/passwd", "media_url must be an http(s) URL"),
        ("https://", "media_url must be an http(s) URL"),
        ("/photos/1.jpg", "media_url must be an http(s) URL"),
        ("https://img.example.org/a b.jpg", "media_url must be an http(s) URL"),
        ('https://img.example.org/"onmouseover=x', "media_url must be an http(s) URL"),
        ("https://[::1/a.jpg", "media_url must be an http(s) URL"),
        ("https://img.example.org:0/a.jpg", "media_url must be an http(s) URL"),
        ("https://user:secret@img.example.org/a.jpg", "must not carry a user name or password"),
        ("https://img.example.org/" + "a" * 480, "at most 500 characters"),
    ],
)
def test_given_a_bad_media_url_then_400_and_nothing_filed(
    client, session, world, key, media_url, problem
):
    (said,) = _errors_json(_post(client, key, media_url=media_url), 400)
    assert problem in said
    assert session.exec(select(Ticket)).all() == []


def test_given_a_bad_email_or_account_id_then_400_naming_it(client, session, world, key):
    for email in ("not-an-email", "a@b", "a b@example.org", "x" * 250 + "@example.org"):
        said = _errors_xml(_post(client, key, fmt="xml", email=email), 400)
        assert any(s.startswith("email:") for s in said), said
    (said,) = _errors_json(_post(client, key, account_id="x" * 101), 400)
    assert said == "account_id is longer than 100 characters"
    assert session.exec(select(Ticket)).all() == []
    # a partner app that sends no contact at all files as well
    bare = {"email": "", "media_url": "", "device_id": "", "first_name": "", "last_name": ""}
    assert _post(client, key, **bare).status_code == 201


class _Watched(http.server.BaseHTTPRequestHandler):
    asked: list[str] = []

    def do_GET(self) -> None:
        self.asked.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def watched_server() -> Iterator[str]:
    """An HTTP server on loopback that records every request it gets."""
    _Watched.asked = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Watched)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_given_a_media_url_on_this_network_then_the_server_never_fetches_it(
    client, session, world, key, watched_server
):
    url = f"{watched_server}/internal/admin.jpg"
    response = _post(client, key, media_url=url)
    assert response.status_code == 201
    number = response.json()[0]["service_request_id"]
    client.get(f"{V2}/requests/{number}.json")
    _, events = _filed(session, number)
    assert any(e.data.get("media_url") == url for e in events)
    # the server itself answers a request (so it was listening the whole time) ...
    with urllib.request.urlopen(f"{watched_server}/probe", timeout=10) as answer:
        assert answer.status == 200
    # ... and the only one it ever got is the test's own
    assert _Watched.asked == ["/probe"]
