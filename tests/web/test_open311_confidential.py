"""A confidential caller's e-mail and account id, kept on an Open311 request's record (the
`open311_submission` note), under the rule of the caller's name and number: whoever may not
see a confidential caller (a unit's handler) does not find them in the ticket's events,
through the API or on the ticket page; the centre's staff do. A request that is not
confidential shows them to the handlers it went to, as it shows the caller's number."""

from __future__ import annotations

import pytest
from sqlmodel import select

from accounts.models import User
from accounts.signin import set_password
from hotline.open311 import clients
from hotline.open311.requests import SUBMITTED
from tests.web.test_pages_signin import PASSWORD, sign_in
from tickets.models import Ticket

V2 = "/open311/v2"
TICKETS = "/api/v1/tickets"
EMAIL = "zhang.sanfeng@example.org"
ACCOUNT = "app-user-778899"
FIELDS = {
    "service_code": "040101",
    "address_string": "榆林市榆阳区新建路",
    "description": "工地老板拖欠工资三个月",  # the test world's rule sends it to HRSS
    "first_name": "三丰",
    "last_name": "张",
    "phone": "13812345678",
    "email": EMAIL,
    "account_id": ACCOUNT,
    "media_url": "https://img.example.org/photos/778899.jpg",
}
HANDLER = "hrss.handler"


@pytest.fixture
def filed(client, session, world, clock, auth) -> Ticket:
    """An Open311 request with the sender's e-mail and account id, dispatched to HRSS."""
    _, key = clients.issue(session, name="市民 App", actor="admin:test", now=clock.now())
    for username in (HANDLER, "dispatcher"):
        user = session.scalars(select(User).where(User.username == username)).one()
        set_password(session, user_id=user.id, password=PASSWORD, now=clock.now())
    session.commit()
    response = client.post(f"{V2}/requests.json", data={**FIELDS, "api_key": key})
    assert response.status_code == 201, response.text
    number = response.json()[0]["service_request_id"]
    ticket = session.exec(select(Ticket).where(Ticket.number == number)).one()
    lead = client.get(f"{TICKETS}/{ticket.id}", headers=auth(HANDLER))
    assert lead.status_code == 200, "the handler's unit must have the ticket"
    return ticket


def _confidential(client, auth, ticket: Ticket) -> None:
    """The operator marks the caller confidential (a correction of the intake)."""
    response = client.patch(
        f"{TICKETS}/{ticket.id}", headers=auth("operator"), json={"confidential": True}
    )
    assert response.status_code == 200, response.text


def _submission(events: list[dict]) -> dict:
    (note,) = [e for e in events if e["data"].get("kind") == SUBMITTED]
    return note["data"]


def test_given_confidential_open311_caller_when_handler_reads_events_then_no_email_or_account(
    client, auth, filed
):
    _confidential(client, auth, filed)
    response = client.get(f"{TICKETS}/{filed.id}/events", headers=auth(HANDLER))
    assert response.status_code == 200
    assert EMAIL not in response.text and ACCOUNT not in response.text
    assert "13812345678" not in response.text and "张三丰" not in response.text
    kept = _submission(response.json())
    # what the record is stays readable: which application filed it, and the link
    assert kept["client"] == "市民 App" and kept["media_url"] == FIELDS["media_url"]


@pytest.mark.parametrize("who", ["operator", "dispatcher", "supervisor", "admin"])
def test_given_confidential_open311_caller_when_centre_staff_read_events_then_in_clear(
    client, auth, filed, who
):
    _confidential(client, auth, filed)
    events = client.get(f"{TICKETS}/{filed.id}/events", headers=auth(who)).json()
    kept = _submission(events)
    assert (kept["email"], kept["account_id"]) == (EMAIL, ACCOUNT)


def test_given_confidential_open311_caller_when_handler_opens_the_page_then_no_contact(
    client, auth, filed
):
    _confidential(client, auth, filed)
    assert sign_in(client, HANDLER).status_code == 303
    page = client.get(f"/tickets/{filed.id}")
    assert page.status_code == 200
    assert "open311-sent" in page.text  # the record is on the timeline ...
    assert EMAIL not in page.text and ACCOUNT not in page.text  # ... without the contact
    assert "13812345678" not in page.text


def test_given_confidential_open311_caller_when_dispatcher_opens_the_page_then_mail_link(
    client, auth, filed
):
    _confidential(client, auth, filed)
    assert sign_in(client, "dispatcher").status_code == 303
    page = client.get(f"/tickets/{filed.id}")
    assert f'href="mailto:{EMAIL}"' in page.text and ACCOUNT in page.text


def test_given_open311_caller_not_confidential_then_the_handler_sees_the_contact(
    client, auth, filed
):
    events = client.get(f"{TICKETS}/{filed.id}/events", headers=auth(HANDLER)).json()
    kept = _submission(events)
    assert (kept["email"], kept["account_id"]) == (EMAIL, ACCOUNT)
