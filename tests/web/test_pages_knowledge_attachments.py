"""Files of knowledge articles through the pages: a unit's handler uploads on the edit page
(at once with htmx, or with "Save version" without JavaScript), a refused file is named on
the form with nothing typed or accepted lost, the version carries the files and the history
says what changed; who may download follows who may read the version, with the headers
that keep a file from running in the page. Both backends; then the whole flow in Chromium,
with screenshots in Chinese and English."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect
from sqlalchemy import select
from sqlmodel import col

from accounts.models import AuditEntry, User
from accounts.signin import set_password
from core.settings import Settings, WebSettings
from hotline.knowledge import service
from hotline.knowledge.models import KnowledgeArticle, KnowledgeArticleCreate, KnowledgeFile
from tests.hotline import knowledge_samples as samples
from tests.web.browser import new_page, shot, sign_in
from tests.web.test_pages_signin import _csrf
from tests.web.test_pages_signin import sign_in as sign_in_client
from web.app import create_app
from web.pages.knowledge_files import content_disposition

PASSWORD = "Hotline-12345"
USERS = ("operator", "supervisor", "water.handler", "housing.handler")
MAX = 64 * 1024
BODY = "停水超过12小时的，安排送水车临时供水。"


@pytest.fixture
def app(session_factory, clock, tmp_path):
    settings = Settings(
        environment="test", data_dir=tmp_path, web=WebSettings(attachment_max_bytes=MAX)
    )
    return create_app(settings=settings, session_factory=session_factory, clock=clock)


@pytest.fixture
def as_user(app, session, world, clock) -> Iterator[Callable[[str], TestClient]]:
    """as_user("water.handler"): a client signed in as that user (one per user)."""
    for username in USERS:
        user = session.scalars(select(User).where(col(User.username) == username)).one()
        set_password(session, user_id=user.id, password=PASSWORD, now=clock.now())
    session.commit()
    clients: dict[str, TestClient] = {}
    with ExitStack() as stack:

        def get(username: str) -> TestClient:
            if username not in clients:
                client = stack.enter_context(TestClient(app))
                assert sign_in_client(client, username, PASSWORD).status_code == 303
                clients[username] = client
            return clients[username]

        yield get


@pytest.fixture
def article(session, world, clock) -> KnowledgeArticle:
    made = service.create_article(
        session,
        user=world.handlers["WATER"],
        data=KnowledgeArticleCreate(
            title="供水中断时的临时供水安排",
            body=BODY,
            category_code="020301",
            owner_unit_id=world.units["WATER"].id,
        ),
        now=clock.now(),
    )
    session.commit()
    return made


def _fields(article: KnowledgeArticle, **changes: str) -> dict[str, str]:
    return {
        "expected_version": str(article.version),
        "title": article.title,
        "body": article.body,
        "category_code": article.category_code,
        "owner_unit_id": str(article.owner_unit_id),
        "policy_source": "",
        "document_number": "",
        "region": "",
        "valid_from": "",
        "valid_until": "",
        "review_due": "",
        "note": "",
    } | changes


def _edit(client, article, files=(), extra=None, **changes):
    """POST the edit form as a browser without JavaScript sends it (multipart)."""
    page = client.get(f"/knowledge/{article.id}/edit")
    assert page.status_code == 200, page.text[:500]
    data = {"csrf_token": _csrf(page.text), **_fields(article, **changes), **(extra or {})}
    parts = [("files", (name, body, "application/octet-stream")) for name, body in files]
    return client.post(
        f"/knowledge/{article.id}/edit",
        data=data,
        files=parts or None,
        follow_redirects=False,
    )


def _refresh(session, article) -> KnowledgeArticle:
    session.expire_all()
    return session.get(KnowledgeArticle, article.id)


def _file(session, name: str) -> KnowledgeFile:
    session.expire_all()
    return session.scalars(select(KnowledgeFile).where(col(KnowledgeFile.filename) == name)).one()


def test_given_a_pdf_chosen_on_the_edit_form_when_saved_then_the_new_version_lists_it(
    as_user, session, article
):
    handler = as_user("water.handler")
    form = handler.get(f"/knowledge/{article.id}/edit").text
    assert 'enctype="multipart/form-data"' in form and 'name="files"' in form

    saved = _edit(handler, article, files=[("供水条例（2026）.pdf", samples.pdf())])

    assert saved.status_code == 303, saved.text[:3000]
    article = _refresh(session, article)
    pdf = _file(session, "供水条例（2026）.pdf")
    assert (article.version, pdf.added_in) == (2, 2)
    page = handler.get(f"/knowledge/{article.id}").text
    assert f'href="/knowledge/files/{pdf.id}"' in page
    history = page.split('id="kb-history"')[1].split("</table>")[0]
    assert "<ins>+供水条例（2026）.pdf</ins>" in history
    upload = col(AuditEntry.action) == "knowledge.page.upload"
    [entry] = session.scalars(select(AuditEntry).where(upload)).all()
    assert entry.detail["files"] == ["供水条例（2026）.pdf"]


def test_a_download_is_an_attachment_with_a_safe_name_and_no_sniffing(as_user, session, article):
    handler = as_user("water.handler")
    data = samples.pdf()
    _edit(handler, article, files=[("供水;条例 v2.pdf", data), ("map.png", samples.png())])
    pdf, image = _file(session, "供水;条例 v2.pdf"), _file(session, "map.png")

    got = handler.get(f"/knowledge/files/{pdf.id}")

    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["x-content-type-options"] == "nosniff"
    name = quote("供水;条例 v2.pdf", safe="")
    assert got.headers["content-disposition"] == (
        f"attachment; filename=\"_____ v2.pdf\"; filename*=UTF-8''{name}"
    )
    assert content_disposition("attachment", 'a"b\\c\r.pdf') == (
        "attachment; filename=\"a_b_c_.pdf\"; filename*=UTF-8''a%22b%5Cc%0D.pdf"
    )
    assert "sandbox" in got.headers["content-security-policy"]
    # only an image is ever shown in place
    assert (
        handler.get(f"/knowledge/files/{pdf.id}?inline=1")
        .headers["content-disposition"]
        .startswith("attachment;")
    )
    shown = handler.get(f"/knowledge/files/{image.id}?inline=1")
    assert shown.headers["content-disposition"].startswith("inline;")
    assert shown.headers["content-type"] == "image/png"


def test_a_drafts_files_are_hidden_from_operators_until_the_version_is_published(
    as_user, session, article
):
    handler, operator = as_user("water.handler"), as_user("operator")
    _edit(handler, article, files=[("条例.pdf", samples.pdf())])
    pdf = _file(session, "条例.pdf")
    assert operator.get(f"/knowledge/files/{pdf.id}").status_code == 404
    assert as_user("housing.handler").get(f"/knowledge/files/{pdf.id}").status_code == 404
    assert as_user("supervisor").get(f"/knowledge/files/{pdf.id}").status_code == 200
    assert operator.get("/knowledge/files/999999").status_code == 404

    page = handler.get(f"/knowledge/{article.id}").text
    handler.post(
        f"/knowledge/{article.id}/submit", data={"csrf_token": _csrf(page)}, follow_redirects=False
    )
    centre = as_user("supervisor")
    page = centre.get(f"/knowledge/{article.id}").text
    approved = centre.post(
        f"/knowledge/{article.id}/approve", data={"csrf_token": _csrf(page)}, follow_redirects=False
    )
    assert approved.status_code == 303

    assert operator.get(f"/knowledge/files/{pdf.id}").content == samples.pdf()
    assert f'href="/knowledge/files/{pdf.id}"' in operator.get(f"/knowledge/{article.id}").text


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("big.pdf", b"%PDF-" + b"0" * MAX, "big.pdf 大于"),
        ("fake.pdf", b"MZ\x90\x00 a program", "fake.pdf 不是"),
        ("sheet.docx", samples.xlsx(), "sheet.docx 不是"),
        ("tool.exe", b"MZ\x90\x00", "tool.exe 不是"),
        ("empty.txt", b"", "empty.txt 是空文件"),
    ],
)
def test_a_refused_file_is_named_on_the_form_and_nothing_typed_or_accepted_is_lost(
    as_user, session, article, name, data, words
):
    handler = as_user("water.handler")
    typed = "改写后的答复：停水超过12小时的，安排送水车。"

    refused = _edit(handler, article, files=[("good.pdf", samples.pdf()), (name, data)], body=typed)

    assert refused.status_code == 422
    html = refused.text
    assert words in html, html[html.find("kb-files") :][:2000]
    assert typed in html  # the text typed comes back
    good = _file(session, "good.pdf")
    assert f'name="staged" value="{good.id}" checked' in html  # and the file accepted
    assert _refresh(session, article).version == 1  # nothing saved
    refused_rows = select(KnowledgeFile).where(col(KnowledgeFile.filename) == name)
    assert session.scalars(refused_rows).all() == []

    saved = _edit(handler, article, extra={"staged": str(good.id)}, body=typed)
    assert saved.status_code == 303, saved.text[:1500]
    assert _file(session, "good.pdf").added_in == 2


def test_an_upload_purged_while_the_form_was_open_is_asked_for_again(as_user, session, article):
    handler = as_user("water.handler")
    typed = "改写后的答复。"
    gone = _edit(handler, article, extra={"staged": "987654"}, body=typed)

    assert gone.status_code == 422
    assert "上传的文件已不在：请重新选择。" in gone.text and typed in gone.text
    assert _refresh(session, article).version == 1


def test_the_same_file_twice_is_refused_as_a_duplicate(as_user, session, article):
    handler = as_user("water.handler")
    assert _edit(handler, article, files=[("条例.pdf", samples.pdf())]).status_code == 303
    article = _refresh(session, article)

    again = _edit(handler, article, files=[("条例-副本.pdf", samples.pdf())])

    assert again.status_code == 422
    assert "条例-副本.pdf 已作为 条例.pdf 上传过" in again.text


def test_htmx_uploads_at_once_and_gets_back_only_the_files_part(as_user, session, article):
    handler = as_user("water.handler")
    token = _csrf(handler.get(f"/knowledge/{article.id}/edit").text)
    headers = {"HX-Request": "true", "X-CSRF-Token": token}

    first = handler.post(
        f"/knowledge/{article.id}/files",
        headers=headers,
        data={"csrf_token": token},
        files=[("files", ("map.png", samples.png(), "image/png"))],
    )

    assert first.status_code == 200
    assert "<html" not in first.text and first.text.lstrip().startswith("<fieldset")
    image = _file(session, "map.png")
    assert f'name="staged" value="{image.id}" checked' in first.text
    assert f"![map.png](attachment:{image.id})" in first.text
    duplicate = handler.post(
        f"/knowledge/{article.id}/files",
        headers=headers,
        data={"csrf_token": token, "staged": str(image.id)},
        files=[("files", ("map-2.png", samples.png(), "image/png"))],
    )
    assert duplicate.status_code == 200  # htmx swaps only a 2xx answer
    assert 'role="alert"' in duplicate.text and "map-2.png 已作为 map.png 上传过" in duplicate.text
    assert f'name="staged" value="{image.id}" checked' in duplicate.text


def test_an_upload_needs_the_csrf_token_and_the_right_to_write(as_user, session, article):
    handler = as_user("water.handler")
    forged = handler.post(
        f"/knowledge/{article.id}/files",
        files=[("files", ("a.pdf", samples.pdf(), "application/pdf"))],
    )
    other = as_user("housing.handler")
    token = _csrf(other.get("/knowledge").text)
    foreign = other.post(
        f"/knowledge/{article.id}/files",
        data={"csrf_token": token},
        files=[("files", ("a.pdf", samples.pdf(), "application/pdf"))],
    )

    assert forged.status_code == 403
    assert foreign.status_code == 404
    assert session.scalars(select(KnowledgeFile)).all() == []


def test_an_image_is_shown_in_the_answer_and_a_removed_file_leaves_the_next_version(
    as_user, session, article
):
    handler = as_user("water.handler")
    _edit(handler, article, files=[("map.png", samples.png()), ("条例.pdf", samples.pdf())])
    image, pdf = _file(session, "map.png"), _file(session, "条例.pdf")
    article = _refresh(session, article)
    body = f"见下图：\n\n![供水点](attachment:{image.id})\n\n[条例全文](attachment:{pdf.id})"

    assert _edit(handler, article, body=body).status_code == 303
    page = handler.get(f"/knowledge/{article.id}").text
    assert f'<img src="/knowledge/files/{image.id}?inline=1" alt="供水点"' in page
    assert f'<a href="/knowledge/files/{pdf.id}">条例全文</a>' in page

    article = _refresh(session, article)
    assert _edit(handler, article, extra={"remove": str(pdf.id)}).status_code == 303
    page = handler.get(f"/knowledge/{article.id}").text  # version 4
    assert '<a href="#kb-files">条例全文</a>' in page  # a link to a file it no longer has
    assert f'href="/knowledge/files/{pdf.id}"' not in page
    diff = page.split('id="kb-diff"')[1]
    assert "条例.pdf" in diff.split('id="kb-diff-files"')[1].split("</ul>")[0]
    version_2 = handler.get(f"/knowledge/{article.id}?version=2").text
    assert f'href="/knowledge/files/{pdf.id}"' in version_2  # old versions keep theirs


# ---------------------------------------------------------------- in Chromium


def _article_id(url: str) -> int:
    match = re.search(r"/knowledge/(\d+)", url)
    assert match, url
    return int(match.group(1))


def test_a_handler_attaches_a_pdf_the_centre_publishes_and_an_operator_opens_it(
    site, page, chromium, tmp_path
):
    sign_in(page, site, "water.handler")
    page.goto(f"{site.url}/knowledge/new")
    page.fill("input[name=title]", "停水期间临时供水点及送水安排")
    page.fill("input[name=category_code]", "0203")
    page.fill("textarea[name=body]", "停水超过12小时的，供水企业在小区设临时供水点。")
    page.click("button:has-text('保存草稿')")
    expect(page.locator(".alert.ok")).to_have_text("草稿已保存。")
    article_url = page.url.split("?")[0]
    page.click("#kb-actions a.button")
    page.wait_for_url("**/edit")
    page.wait_for_load_state("load")  # htmx listens for the files' change before they come

    pdf = samples.pdf("Temporary water supply points")
    page.set_input_files(
        "input[name=files]",
        files=[
            {"name": "临时供水点.pdf", "mimeType": "application/pdf", "buffer": pdf},
            {"name": "供水点示意图.png", "mimeType": "image/png", "buffer": samples.png(320, 120)},
        ],
    )
    staged = page.locator("#kb-files tr.kb-staged")
    expect(staged).to_have_count(2)  # uploaded at once (htmx)
    # the same PDF again is refused beside the field; the typed answer stays
    page.fill("textarea[name=body]", "停水超过12小时的，供水企业在小区设临时供水点，见附件。")
    page.set_input_files(
        "input[name=files]",
        files=[{"name": "副本.pdf", "mimeType": "application/pdf", "buffer": pdf}],
    )
    expect(page.locator("#err-files")).to_contain_text("副本.pdf 已作为 临时供水点.pdf 上传过")
    expect(page.locator("textarea[name=body]")).to_have_value(
        "停水超过12小时的，供水企业在小区设临时供水点，见附件。"
    )
    page.evaluate("document.getElementById('err-files').scrollIntoView({block: 'center'})")
    shot(page, "knowledge_attachments-form")
    image_snippet = page.locator("#kb-files tr.kb-staged code").nth(1).inner_text()
    assert image_snippet.startswith("![供水点示意图.png](attachment:")
    page.fill(
        "textarea[name=body]",
        "停水超过12小时的，供水企业在小区设临时供水点，见附件。\n\n" + image_snippet,
    )
    page.fill("input[name=note]", "附上供水点文件和示意图")
    page.click("button:has-text('保存新版本')")
    expect(page.locator(".alert.ok")).to_have_text("新版本已保存。")
    expect(page.locator("#kb-files li")).to_have_count(2)
    page.click("button:has-text('提交审核')")

    with new_page(chromium) as (centre, seen):
        sign_in(centre, site, "supervisor")
        centre.goto(article_url)
        centre.click("button:has-text('审核通过并发布第2版')")
        expect(centre.locator("h1 .badge")).to_have_text("已发布")
        assert seen.errors == []

    with new_page(chromium) as (operator, seen):
        sign_in(operator, site, "operator")
        operator.goto(article_url)
        image = operator.locator("#kb-body img")
        expect(image).to_be_visible()
        assert (
            operator.evaluate("document.querySelector('#kb-body img').naturalWidth") == 320
        )  # the image was served inline and drawn
        with operator.expect_download() as download_info:
            operator.click("#kb-files a:has-text('临时供水点.pdf')")
        download = download_info.value
        assert download.suggested_filename == "临时供水点.pdf"
        saved = tmp_path / "got.pdf"
        download.save_as(saved)
        assert saved.read_bytes() == pdf
        expect(operator.locator("#kb-history")).to_contain_text("+临时供水点.pdf")
        assert shot(operator, "knowledge_attachments").name == "knowledge_attachments.zh-CN.png"
        operator.click("button[lang=en]")
        expect(operator.locator("#kb-files h2")).to_contain_text("Attachments")
        assert shot(operator, "knowledge_attachments").name == "knowledge_attachments.en.png"
        assert seen.errors == [] and seen.aborted == []

    with site.session_factory() as session:
        kept = session.scalars(
            select(KnowledgeFile.filename).where(
                col(KnowledgeFile.article_id) == _article_id(article_url)
            )
        ).all()
    assert sorted(kept) == ["临时供水点.pdf", "供水点示意图.png"]  # the duplicate was not kept
