"""The knowledge base pages through the app: a unit's handler drafts, edits and submits an
article of their own unit and sees no other unit's drafts; the centre reviews (sends back
with a reason, approves), and search then finds it with the words that matched; a stale
edit is refused with the typed text kept; a bad form is a 422 naming the field, with
nothing lost; every post needs the CSRF token and is audited; the unit works through its
"did not answer" feedback; the dashboard. Both backends."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import col

from accounts.models import AuditEntry, User
from accounts.signin import set_password
from hotline.knowledge.models import (
    ArticleStatus,
    KnowledgeArticle,
    KnowledgeUse,
    UseKind,
)
from tests.factories import new_ticket
from tests.web.test_pages_signin import _csrf, sign_in

PASSWORD = "Hotline-12345"
USERS = ("operator", "dispatcher", "supervisor", "water.handler", "housing.handler")
BODY = (
    "因管网抢修造成**供水中断**的，应提前24小时公告。\n\n"
    "- 停水超过12小时的，安排送水车临时供水\n"
    "- 详见[供水公告](https://water.example.gov.cn/notice)\n"
)


@pytest.fixture
def people(session, world, clock):
    for username in USERS:
        user = session.scalars(select(User).where(User.username == username)).one()
        set_password(session, user_id=user.id, password=PASSWORD, now=clock.now())
    session.commit()
    return world


@pytest.fixture
def as_user(app, people) -> Iterator[Callable[[str], TestClient]]:
    """as_user("water.handler"): a client signed in as that user (one per user)."""
    clients: dict[str, TestClient] = {}
    with ExitStack() as stack:

        def get(username: str) -> TestClient:
            if username not in clients:
                client = stack.enter_context(TestClient(app))
                assert sign_in(client, username).status_code == 303
                clients[username] = client
            return clients[username]

        yield get


def _post(client: TestClient, path: str, data: dict, page: str | None = None):
    token = _csrf(client.get(page or "/knowledge").text)
    return client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)


def _nav_count(client: TestClient) -> int:
    html = client.get("/nav/counts").text
    match = re.search(r'id="nav-count-knowledge"[^>]*>(\d+)<', html)
    assert match, html
    return int(match.group(1))


def _form(world, unit="WATER", **fields) -> dict[str, str]:
    return {
        "title": "供水中断时的临时供水安排",
        "body": BODY,
        "category_code": "020301",
        "owner_unit_id": str(world.units[unit].id),
        "policy_source": "城市供水条例",
        "document_number": "榆政办发〔2026〕12号",
        "region": "",
        "valid_from": "",
        "valid_until": "",
        "review_due": "2027-06-30",
        "note": "",
    } | fields


def _created(response) -> int:
    assert response.status_code == 303, response.text[:2000]
    match = re.match(r"/knowledge/(\d+)\?done=created", response.headers["location"])
    assert match, response.headers["location"]
    return int(match.group(1))


def _article(session, article_id) -> KnowledgeArticle:
    session.expire_all()
    return session.get(KnowledgeArticle, article_id)


def _audit(session, action):
    session.expire_all()
    return session.scalars(
        select(AuditEntry).where(col(AuditEntry.action) == action).order_by(col(AuditEntry.id))
    ).all()


def test_every_page_renders_for_the_roles_that_use_it(as_user, people):
    for username, paths in {
        "operator": ["/knowledge", "/knowledge?q=停水"],
        "water.handler": [
            "/knowledge",
            "/knowledge/new",
            "/knowledge/feedback",
            "/knowledge/feedback?handled=1",
            "/knowledge/dashboard",
        ],
        "supervisor": [
            "/knowledge?status=draft",
            "/knowledge/new",
            "/knowledge/review",
            "/knowledge/feedback",
            "/knowledge/dashboard?days=7",
        ],
    }.items():
        client = as_user(username)
        for path in paths:
            response = client.get(path)
            assert response.status_code == 200, (username, path, response.text[:500])
            assert "知识库" in response.text


def test_operators_read_but_do_not_write_nor_review(as_user, people):
    operator = as_user("operator")
    for path in ("/knowledge/new", "/knowledge/review", "/knowledge/feedback"):
        assert operator.get(path).status_code == 403, path
    handler = as_user("water.handler")
    assert handler.get("/knowledge/review").status_code == 403
    assert "/knowledge/new" not in operator.get("/knowledge").text


def test_the_lifecycle_end_to_end_through_the_pages(as_user, people, session, clock):
    handler, supervisor = as_user("water.handler"), as_user("supervisor")

    # The unit drafts: only the unit and the centre see it.
    article_id = _created(_post(handler, "/knowledge/new", _form(people), page="/knowledge/new"))
    page = handler.get(f"/knowledge/{article_id}")
    assert page.status_code == 200
    assert "<strong>供水中断</strong>" in page.text
    assert '<a href="https://water.example.gov.cn/notice">供水公告</a>' in page.text
    assert "榆政办发〔2026〕12号" in page.text and "城市供水条例" in page.text
    assert as_user("housing.handler").get(f"/knowledge/{article_id}").status_code == 404
    assert as_user("operator").get(f"/knowledge/{article_id}").status_code == 404
    assert f"/knowledge/{article_id}" not in as_user("housing.handler").get("/knowledge").text

    # Submitted: it is in the centre's queue.
    page_url = f"/knowledge/{article_id}"
    assert _post(handler, f"{page_url}/submit", {}, page=page_url).status_code == 303
    queue = supervisor.get("/knowledge/review")
    assert f'href="/knowledge/{article_id}#kb-diff"' in queue.text
    assert _nav_count(supervisor) == 1  # waiting for review, in the top bar

    # Sent back: a reason is required; the reason reaches the unit.
    blank = _post(supervisor, f"{page_url}/send-back", {"reason": "  "}, page=page_url)
    assert blank.status_code == 422
    assert 'id="err-send_back"' in blank.text
    assert _article(session, article_id).status == ArticleStatus.in_review
    back = _post(supervisor, f"{page_url}/send-back", {"reason": "请补充送水点位"}, page=page_url)
    assert back.status_code == 303
    assert "请补充送水点位" in handler.get(page_url).text

    # The unit edits (a new version) and submits again; the centre sees what changed.
    clock.advance(timedelta(minutes=5))
    edited = _form(
        people, body=BODY + "- 送水点位：小区东门\n", note="补充送水点位", review_due="2027-06-30"
    )
    saved = _post(
        handler, f"{page_url}/edit", {**edited, "expected_version": "1"}, page=f"{page_url}/edit"
    )
    assert saved.status_code == 303, saved.text[:2000]
    assert _article(session, article_id).version == 2
    _post(handler, f"{page_url}/submit", {}, page=page_url)
    review = supervisor.get(page_url)
    assert "+- 送水点位：小区东门" in review.text and "补充送水点位" in review.text
    assert f'action="/knowledge/{article_id}/approve"' in review.text

    # Approved: in service, and search finds it, saying which words matched.
    assert _post(supervisor, f"{page_url}/approve", {}, page=page_url).status_code == 303
    article = _article(session, article_id)
    assert (article.status, article.published_version) == (ArticleStatus.published, 2)
    found = as_user("operator").get("/knowledge", params={"q": "停水了送水车什么时候来"})
    assert found.status_code == 200
    assert f'href="/knowledge/{article_id}?version=2"' in found.text
    assert "<mark>送水车</mark>" in found.text
    assert "因管网抢修造成供水中断的，应提前24小时公告。" in found.text  # the answer's opening

    # Retired: a reason is required; then search never shows it again.
    assert _post(supervisor, f"{page_url}/retire", {"reason": ""}, page=page_url).status_code == 422
    assert (
        _post(supervisor, f"{page_url}/retire", {"reason": "政策废止"}, page=page_url).status_code
        == 303
    )
    gone = as_user("operator").get("/knowledge", params={"q": "停水了送水车什么时候来"})
    assert f"/knowledge/{article_id}?" not in gone.text

    session.expire_all()
    actions = session.scalars(
        select(col(AuditEntry.action))
        .where(col(AuditEntry.action).startswith("knowledge.page."))
        .order_by(col(AuditEntry.id))
    ).all()
    assert actions == [
        "knowledge.page.create",
        "knowledge.page.submit",
        "knowledge.page.send_back",
        "knowledge.page.send_back",
        "knowledge.page.edit",
        "knowledge.page.submit",
        "knowledge.page.approve",
        "knowledge.page.retire",
        "knowledge.page.retire",
    ]
    refused = [e for e in _audit(session, "knowledge.page.send_back") if e.outcome == "refused"]
    assert len(refused) == 1


def test_a_unit_cannot_write_for_another_unit_nor_approve(as_user, people, session):
    handler = as_user("water.handler")
    form = _form(people, unit="HOUSING")
    refused = _post(handler, "/knowledge/new", form, page="/knowledge/new")
    assert refused.status_code == 403
    assert "供水中断时的临时供水安排" in refused.text  # the typed text is kept
    assert session.scalars(select(KnowledgeArticle)).all() == []
    [entry] = _audit(session, "knowledge.page.create")
    assert entry.outcome == "refused"

    article_id = _created(_post(handler, "/knowledge/new", _form(people), page="/knowledge/new"))
    url = f"/knowledge/{article_id}"
    _post(handler, f"{url}/submit", {}, page=url)
    assert _post(handler, f"{url}/approve", {}, page=url).status_code == 403
    assert _post(handler, f"{url}/retire", {"reason": "不再需要"}, page=url).status_code == 403
    assert _article(session, article_id).status == ArticleStatus.in_review
    other = as_user("housing.handler")
    assert _post(other, f"{url}/submit", {}, page="/knowledge").status_code == 404


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "   "),
        ("category_code", "2a"),
        ("owner_unit_id", ""),
        ("owner_unit_id", "99999999999999999999"),
        ("owner_unit_id", "²"),
        ("review_due", "2027-13-45"),
        ("valid_until", "2026-01-01"),
    ],
)
def test_a_bad_form_is_422_naming_the_field_with_nothing_lost(
    as_user, people, session, field, value
):
    handler = as_user("water.handler")
    form = _form(people, valid_from="2026-06-01", **{field: value})

    response = _post(handler, "/knowledge/new", form, page="/knowledge/new")

    assert response.status_code == 422
    assert f'id="err-{field}"' in response.text
    assert "aria-invalid" in response.text
    assert "停水超过12小时的，安排送水车临时供水" in response.text
    assert "榆政办发〔2026〕12号" in response.text
    assert session.scalars(select(KnowledgeArticle)).all() == []


def test_odd_filters_are_ignored_not_an_error(as_user, people):
    operator = as_user("operator")
    for params in (
        {"unit": "9" * 5000},
        {"unit": "²"},
        {"status": "draft"},  # readers see what is in service only
        {"category": "0'; --"},
    ):
        response = operator.get("/knowledge", params=params)
        assert response.status_code == 200, params


def test_posts_without_the_csrf_token_are_refused(as_user, people, session):
    handler = as_user("water.handler")
    response = handler.post("/knowledge/new", data=_form(people), follow_redirects=False)
    assert response.status_code == 403
    forged = handler.post(
        "/knowledge/new", data={"csrf_token": "forged", **_form(people)}, follow_redirects=False
    )
    assert forged.status_code == 403
    assert session.scalars(select(KnowledgeArticle)).all() == []


def test_a_stale_edit_is_refused_and_the_typed_text_kept(as_user, people, session):
    handler, dispatcher = as_user("water.handler"), as_user("dispatcher")
    article_id = _created(_post(handler, "/knowledge/new", _form(people), page="/knowledge/new"))
    url = f"/knowledge/{article_id}/edit"
    assert 'name="expected_version" value="1"' in handler.get(url).text

    # The dispatcher saves version 2 while the handler is still typing.
    first = _post(
        dispatcher,
        url,
        {**_form(people, title="供水中断（中心修订）"), "expected_version": "1"},
        page=url,
    )
    assert first.status_code == 303
    mine = _form(people, body=BODY + "- 我新写的一行\n")
    stale = _post(handler, url, {**mine, "expected_version": "1"}, page=url)

    assert stale.status_code == 409
    assert 'id="kb-conflict"' in stale.text
    assert "我新写的一行" in stale.text  # kept
    assert 'name="expected_version" value="2"' in stale.text  # may now save over it knowingly
    # The title only the dispatcher changed is taken in; the body only the handler changed
    # stays theirs; nothing is marked as changed by both.
    assert 'name="title" value="供水中断（中心修订）"' in stale.text
    assert "aria-invalid" not in stale.text
    both = _post(
        handler,
        url,
        {**_form(people, title="供水中断（单位修订）"), "expected_version": "1"},
        page=url,
    )
    assert both.status_code == 409
    assert 'id="err-title"' in both.text and 'value="供水中断（单位修订）"' in both.text
    article = _article(session, article_id)
    assert (article.version, article.title) == (2, "供水中断（中心修订）")

    again = _post(
        handler, url, {**mine, "title": "供水中断（中心修订）", "expected_version": "2"}, page=url
    )
    assert again.status_code == 303
    article = _article(session, article_id)
    assert (article.version, article.title) == (3, "供水中断（中心修订）")
    assert "我新写的一行" in article.body


def test_an_edit_that_changes_nothing_says_so(as_user, people):
    handler = as_user("water.handler")
    article_id = _created(_post(handler, "/knowledge/new", _form(people), page="/knowledge/new"))
    url = f"/knowledge/{article_id}/edit"
    same = _post(handler, url, {**_form(people), "expected_version": "1"}, page=url)
    assert same.status_code == 422
    assert "没有改动" in same.text


def test_markdown_is_rendered_without_raw_html_or_script_links(as_user, people):
    handler = as_user("water.handler")
    body = '<script>alert("x")</script>\n\n[点我](javascript:alert(1)) <img src=x onerror=alert(1)>'
    article_id = _created(
        _post(handler, "/knowledge/new", _form(people, body=body), page="/knowledge/new")
    )
    page = handler.get(f"/knowledge/{article_id}").text
    article = page.split('id="kb-body"', 1)[1].split("</article>", 1)[0]
    assert "<script>" not in article and "<img" not in article
    assert "&lt;script&gt;" in article
    assert 'href="javascript:' not in article


def test_the_unit_works_through_its_feedback(as_user, people, session, clock):
    handler, supervisor = as_user("water.handler"), as_user("supervisor")
    ids = {}
    for unit, username in (("WATER", "water.handler"), ("HOUSING", "housing.handler")):
        client = as_user(username)
        article_id = _created(
            _post(client, "/knowledge/new", _form(people, unit=unit), page="/knowledge/new")
        )
        url = f"/knowledge/{article_id}"
        _post(client, f"{url}/submit", {}, page=url)
        _post(supervisor, f"{url}/approve", {}, page=url)
        ids[unit] = article_id
    ticket = new_ticket(session, clock.now(), "停水三天了")
    uses = []
    for unit in ("WATER", "HOUSING"):
        use = KnowledgeUse(
            article_id=ids[unit],
            version=1,
            kind=UseKind.not_answered,
            ticket_id=ticket.id,
            user_id=people.staff["operator"].id,
            at=clock.now(),
            note=f"{unit}：市民问的是二次供水",
        )
        session.add(use)
        uses.append(use)
    session.commit()

    page = handler.get("/knowledge/feedback").text
    assert "WATER：市民问的是二次供水" in page and "HOUSING：" not in page
    assert f'href="/tickets/{ticket.id}"' in page
    assert f'action="/knowledge/feedback/{uses[1].id}/handled"' not in page
    assert _post(handler, f"/knowledge/feedback/{uses[1].id}/handled", {}).status_code == 404

    assert _nav_count(handler) == 1
    done = _post(
        handler, f"/knowledge/feedback/{uses[0].id}/handled", {}, page="/knowledge/feedback"
    )
    assert done.status_code == 303
    assert "WATER：" not in handler.get("/knowledge/feedback").text
    assert _nav_count(handler) == 0
    assert "WATER：" in handler.get("/knowledge/feedback?handled=1").text
    twice = _post(supervisor, f"/knowledge/feedback/{uses[0].id}/handled", {})
    assert twice.status_code == 409
    session.expire_all()
    assert session.get(KnowledgeUse, uses[0].id).handled_by == people.handlers["WATER"].id
    assert [e.outcome for e in _audit(session, "knowledge.page.feedback_handled")] == [
        "refused",
        "ok",
        "refused",
    ]


def test_the_dashboard_shows_a_unit_its_own_and_the_centre_what_is_missing(
    as_user, people, session, clock
):
    from tickets import service as tickets

    ticket = new_ticket(
        session, clock.now(), "噪音扰民", category_code="0501", category_name="噪声污染"
    )
    tickets.close_at_intake(
        session, ticket=ticket, answer="已解答", actor="operator:1", now=clock.now()
    )
    session.commit()
    clock.advance(timedelta(minutes=1))

    centre = as_user("supervisor").get("/knowledge/dashboard").text
    assert 'id="kb-missing"' in centre and ticket.number in centre and "噪声污染" in centre
    unit = as_user("water.handler").get("/knowledge/dashboard").text
    assert 'id="kb-missing"' not in unit and ticket.number not in unit
