"""The ticket page (``/tickets/{id}``) through the app, on both backends: what each role
sees (masked as the API masks it), the handler's actions as forms with a notice after each
and the problem in words next to the form, refusals in the audit trail, reply files kept
and served only to those who may see the ticket, and another unit's ticket answering
exactly as a missing one."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlmodel import col

from accounts.models import AuditEntry, User
from accounts.signin import set_password
from core.clock import FrozenClock
from core.errors import IllegalTransition
from core.settings import Settings, WebSettings
from dispatch import escalation
from dispatch.models import Assignment, Attachment
from tests.web.test_pages_signin import PASSWORD, _csrf, sign_in
from tests.web.test_tickets import WATER_CUT, post
from web.app import create_app


def same_page(a: str, b: str) -> bool:
    """The same page but for the address it was asked at (the language switch's `next`)."""
    strip = re.compile(r'name="next" value="[^"]*"')
    return strip.sub("", a) == strip.sub("", b)


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture
def app(session_factory, clock: FrozenClock, tmp_path):
    """The app keeping its files under the test's own directory, 1 KB at most each."""
    settings = Settings(
        environment="test", data_dir=tmp_path, web=WebSettings(attachment_max_bytes=1024)
    )
    return create_app(settings=settings, session_factory=session_factory, clock=clock)


@pytest.fixture
def staff(session, world, clock):
    for username in ("operator", "dispatcher", "water.handler", "hrss.handler", "water.head"):
        user = session.scalars(select(User).where(User.username == username)).one()
        set_password(session, user_id=user.id, password=PASSWORD, now=clock.now())
    session.commit()
    return world


@pytest.fixture
def water(client, auth, staff) -> dict:
    """A ticket the rules dispatch to WATER (lead) and HOUSING (co)."""
    body = post(client, auth("operator"), description=WATER_CUT, caller_name="张三").json()
    return body


def _lead(session, ticket_id: int) -> Assignment:
    return session.scalars(
        select(Assignment).where(
            col(Assignment.ticket_id) == ticket_id, col(Assignment.role) == "lead"
        )
    ).one()


def _form(client, path: str, data: dict, files=None):
    """Post a page's form, with the session's CSRF token (the signed-in layout carries it)."""
    page = client.get("/")
    return client.post(
        path, data={"csrf_token": _csrf(page.text), **data}, files=files, follow_redirects=False
    )


def test_given_water_handler_when_signing_for_then_notice_and_the_clocks_move(
    client, session, water
):
    ticket_id = water["ticket"]["id"]
    assignment = _lead(session, ticket_id)
    sign_in(client, "water.handler")
    page = client.get(f"/tickets/{ticket_id}")
    assert page.status_code == 200 and water["ticket"]["number"] in page.text
    assert "签收" in page.text and 'class="clock c-green"' in page.text
    done = _form(client, f"/tickets/{ticket_id}/sign", {"assignment_id": assignment.id})
    assert done.status_code == 303 and done.headers["location"].startswith(
        f"/tickets/{ticket_id}?done=sign"
    )
    after = client.get(done.headers["location"])
    assert "已签收" in after.text  # the notice
    session.expire_all()
    assert _lead(session, ticket_id).status == "signed"
    entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "ticket.sign")).one()
    assert entry.outcome == "ok" and entry.target == f"ticket:{ticket_id}"


def test_given_signed_ticket_when_replying_with_a_png_then_kept_listed_and_served_to_the_unit_only(
    client, session, water, tmp_path
):
    ticket_id = water["ticket"]["id"]
    assignment = _lead(session, ticket_id)
    sign_in(client, "water.handler")
    _form(client, f"/tickets/{ticket_id}/sign", {"assignment_id": assignment.id})
    done = _form(
        client,
        f"/tickets/{ticket_id}/reply",
        {"assignment_id": assignment.id, "text": "已抢修完毕，恢复供水"},
        files=[("files", ("现场照片.png", PNG, "image/png"))],
    )
    assert done.status_code == 303
    page = client.get(f"/tickets/{ticket_id}").text
    row = session.scalars(select(Attachment)).one()
    assert "已抢修完毕" in page and f"/attachments/{row.id}" in page and "现场照片.png" in page
    assert list((tmp_path / "attachments").rglob(row.storage_key))
    got = client.get(f"/attachments/{row.id}")
    assert got.status_code == 200 and got.content == PNG
    assert got.headers["content-type"] == "image/png"
    assert got.headers["x-content-type-options"] == "nosniff"
    client.cookies.clear()
    sign_in(client, "hrss.handler")
    html = {"Accept": "text/html"}
    theirs = client.get(f"/attachments/{row.id}", headers=html)
    missing = client.get(f"/attachments/{row.id + 1000}", headers=html)
    assert theirs.status_code == missing.status_code == 404
    assert same_page(theirs.text, missing.text)


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("big.png", PNG + b"\x00" * 2048, "大于"),
        ("script.exe", b"MZ\x90\x00", "不是可保存的文件类型"),
        ("fake.pdf", b"<html>not a pdf</html>", "不是可保存的文件类型"),
    ],
)
def test_given_a_file_too_big_or_of_another_type_when_replying_then_words_and_no_reply(
    client, session, water, name, data, words
):
    ticket_id = water["ticket"]["id"]
    assignment = _lead(session, ticket_id)
    sign_in(client, "water.handler")
    _form(client, f"/tickets/{ticket_id}/sign", {"assignment_id": assignment.id})
    refused = _form(
        client,
        f"/tickets/{ticket_id}/reply",
        {"assignment_id": assignment.id, "text": "已处理"},
        files=[("files", (name, data, "application/octet-stream"))],
    )
    assert refused.status_code == 400 and words in refused.text
    assert 'id="reply-error"' in refused.text and "已处理" in refused.text  # kept in the form
    session.expire_all()
    assert _lead(session, ticket_id).status == "signed"
    assert session.scalars(select(Attachment)).first() is None
    entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "ticket.reply")).one()
    assert entry.outcome == "refused"


def test_given_a_reply_without_text_then_the_problem_next_to_the_form(client, session, water):
    ticket_id = water["ticket"]["id"]
    assignment = _lead(session, ticket_id)
    sign_in(client, "water.handler")
    _form(client, f"/tickets/{ticket_id}/sign", {"assignment_id": assignment.id})
    refused = _form(
        client, f"/tickets/{ticket_id}/reply", {"assignment_id": assignment.id, "text": "  "}
    )
    assert refused.status_code == 400 and "请填写给市民的回复" in refused.text


def test_given_handler_when_logging_contact_note_assign_and_extension_then_all_on_the_timeline(
    client, session, water, world
):
    ticket_id = water["ticket"]["id"]
    a = _lead(session, ticket_id).id
    sign_in(client, "water.handler")
    me = session.scalars(select(User).where(User.username == "water.handler")).one()
    for path, data in (
        ("contact", {"method": "phone", "text": "已电话联系市民，约定明日上门"}),
        ("note", {"text": "需协调物业"}),
        ("assign", {"assignee_id": str(me.id)}),
        ("extension", {"extend_by": "2", "extend_unit": "workdays", "reason": "需更换主管道"}),
    ):
        done = _form(client, f"/tickets/{ticket_id}/{path}", {"assignment_id": a, **data})
        assert done.status_code == 303, (path, done.text[:500])
    page = client.get(f"/tickets/{ticket_id}").text
    for words in ("约定明日上门", "需协调物业", "需更换主管道", "等待审批", me.display_name):
        assert words in page, words
    inbox = client.get("/inbox", params={"mine": "1"}).text
    assert water["ticket"]["number"] in inbox


def test_given_a_return_without_a_reason_code_then_refused_in_words(client, session, water):
    ticket_id = water["ticket"]["id"]
    a = _lead(session, ticket_id).id
    sign_in(client, "water.handler")
    refused = _form(
        client, f"/tickets/{ticket_id}/return", {"assignment_id": a, "reason": "不归我们"}
    )
    assert refused.status_code == 400 and "请选择" in refused.text


def test_given_an_already_signed_assignment_when_signing_again_then_words_not_a_trace(
    client, session, water
):
    ticket_id = water["ticket"]["id"]
    a = _lead(session, ticket_id).id
    sign_in(client, "water.handler")
    _form(client, f"/tickets/{ticket_id}/sign", {"assignment_id": a})
    again = _form(client, f"/tickets/{ticket_id}/sign", {"assignment_id": a})
    assert again.status_code == 400 and "已无法进行" in again.text


def test_given_another_units_ticket_then_the_same_404_as_a_missing_one_and_posts_refused(
    client, session, water
):
    ticket_id = water["ticket"]["id"]
    a = _lead(session, ticket_id).id
    sign_in(client, "hrss.handler")
    html = {"Accept": "text/html"}
    theirs = client.get(f"/tickets/{ticket_id}", headers=html)
    missing = client.get(f"/tickets/{ticket_id + 1000}", headers=html)
    assert theirs.status_code == missing.status_code == 404 and same_page(theirs.text, missing.text)
    token = _csrf(client.get("/").text)
    refused = client.post(
        f"/tickets/{ticket_id}/sign", data={"csrf_token": token, "assignment_id": a}
    )
    assert refused.status_code == 404
    session.expire_all()
    assert _lead(session, ticket_id).status == "dispatched"
    entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "ticket.sign")).one()
    assert entry.outcome == "refused"


def test_given_dispatcher_then_links_to_the_queues_the_state_allows_and_no_unit_forms(
    client, session, water
):
    ticket_id = water["ticket"]["id"]
    sign_in(client, "dispatcher")
    page = client.get(f"/tickets/{ticket_id}").text
    assert f'href="/dispatch/{ticket_id}"' in page  # re-dispatch while with a unit
    assert f'href="/queues/merge/{ticket_id}"' in page
    assert f'href="/queues/replies/{ticket_id}"' not in page  # nothing replied yet
    assert f"/tickets/{ticket_id}/sign" not in page


def test_given_operator_then_no_unit_forms_only_the_links_the_api_lets_them_take(
    client, session, water, clock
):
    ticket_id = water["ticket"]["id"]
    lead = _lead(session, ticket_id)
    sign_in(client, "water.handler")
    page = client.get(f"/tickets/{ticket_id}")
    _form(
        client,
        f"/tickets/{ticket_id}/return",
        {"assignment_id": lead.id, "reason_code": "wrong_mandate", "reason": "应由住建部门办理"},
    )
    client.cookies.clear()
    sign_in(client, "operator")
    page = client.get(f"/tickets/{ticket_id}").text
    assert "张三" in page and '<form method="post" action="/tickets/' not in page
    assert f'href="/dispatch/{ticket_id}"' in page  # operators may re-dispatch (API: intake)
    assert f'href="/queues/returns/{ticket_id}"' not in page  # returns are the dispatchers'
    client.cookies.clear()
    sign_in(client, "dispatcher")
    assert f'href="/queues/returns/{ticket_id}"' in client.get(f"/tickets/{ticket_id}").text


def test_given_confidential_caller_then_the_handler_sees_them_masked(client, auth, staff):
    body = post(
        client,
        auth("operator"),
        description=WATER_CUT + "，我叫李四",
        caller_name="李四",
        caller_phone="13812345678",
        confidential=True,
    ).json()
    sign_in(client, "water.handler")
    page = client.get(f"/tickets/{body['ticket']['id']}").text
    assert "李四" not in page and "13812345678" not in page


def test_given_a_warning_then_a_yellow_badge_and_the_unit_acknowledges_it(
    client, session, water, clock, session_factory
):
    ticket_id = water["ticket"]["id"]
    lead = _lead(session, ticket_id)
    warn_at = lead.next_escalation_at
    assert warn_at is not None and warn_at < lead.sign_due_at
    clock.advance(warn_at - clock.now() + timedelta(minutes=1))
    escalation.sweep(session_factory, now=clock.now())
    sign_in(client, "water.handler")
    page = client.get(f"/tickets/{ticket_id}").text
    assert 'class="clock c-yellow"' in page and "预警" in page
    assert 'class="clock c-yellow"' in client.get("/inbox").text
    ack = page.split(f'action="/tickets/{ticket_id}/escalations/')[1].split('"')[0]
    done = _form(client, f"/tickets/{ticket_id}/escalations/{ack}", {})
    assert done.status_code == 303
    after = client.get(done.headers["location"]).text
    assert "已确认收到督办" in after and "已确认" in after.split('id="esc-h"')[1]
    clock.advance(lead.sign_due_at - clock.now() + timedelta(minutes=1))
    assert 'class="clock c-red"' in client.get(f"/tickets/{ticket_id}").text


def test_given_an_english_handler_when_the_service_refuses_then_message_ids_not_its_own_words(
    client, session, water, staff
):
    ticket_id = water["ticket"]["id"]
    a = _lead(session, ticket_id).id
    operator = session.scalars(select(User).where(col(User.username) == "operator")).one()
    sign_in(client, "water.handler")
    _form(client, "/account/locale", {"locale": "en"})
    _form(client, f"/tickets/{ticket_id}/sign", {"assignment_id": a})

    refused = _form(
        client, f"/tickets/{ticket_id}/assign", {"assignment_id": a, "assignee_id": operator.id}
    )

    assert refused.status_code == 400
    assert "The person in charge must be an active handler of the unit." in refused.text
    assert "The service refused it" not in refused.text  # the service's sentence, raw


def test_given_a_refusal_no_page_catches_then_the_problem_page_says_it_in_words(app, client, staff):
    """A domain refusal that reaches the app's handler on a page (not the API) is still said
    in the reader's words, never as the service's text."""

    @app.get("/test-refusal")
    def refuse() -> None:
        raise IllegalTransition(
            "cannot sign a ticket in status closed", status="closed", action="sign"
        )

    sign_in(client, "water.handler")
    page = client.get("/test-refusal", headers={"Accept": "text/html"})
    assert page.status_code == 400
    assert "工单当前为" in page.text or "Signing for the ticket is not possible" in page.text
    assert "cannot sign" not in page.text
    api = client.get("/test-refusal")  # a machine keeps the JSON error
    assert api.json()["error"]["code"] == "illegal_transition"


def test_given_a_pair_dismissed_as_not_the_same_request_then_both_timelines_name_it_and_link(
    client, auth, staff, session, clock
):
    from hotline import duplicates

    first = post(client, auth("operator"), description=WATER_CUT).json()["ticket"]
    second = post(client, auth("operator"), description=WATER_CUT + "（另一户）").json()["ticket"]
    duplicates.dismiss(
        session,
        ticket_id=second["id"],
        other_id=first["id"],
        actor=None,
        now=clock.now(),
        reason="两户各自停水",
    )
    session.commit()
    sign_in(client, "dispatcher")
    _form(client, "/account/locale", {"locale": "en"})
    for this, other in ((first, second), (second, first)):
        page = client.get(f"/tickets/{this['id']}").text
        timeline = page.split('class="timeline"')[-1]
        assert "<b>Not the same request as another ticket</b>" in timeline
        assert f'<a href="/tickets/{other["id"]}">{other["number"]}</a>' in timeline
        assert "两户各自停水" in timeline
