"""The knowledge base in Chromium: the water company's handler drafts an article (a bad
category code is refused beside the field, with the text kept), submits it; the supervisor
opens the review queue, compares, approves; the operator's search then finds it and says
which words matched. A stale edit shows the conflict. Screenshots of each page in Chinese
and English at 1366×768."""

from __future__ import annotations

from datetime import timedelta

from playwright.sync_api import expect
from sqlalchemy import select
from sqlmodel import col

from accounts.models import User
from core.db import session_scope
from hotline.knowledge.models import KnowledgeArticle, KnowledgeUse, UseKind
from tests.factories import new_ticket
from tests.web.browser import new_page, shot, sign_in
from tickets import service as tickets

# The first search loads the word segmenter (jieba) into the server: seconds on a busy host.
SLOW = 20_000
BODY = (
    "小区二次供水设施（水箱、加压泵）由**物业或产权单位**负责日常维护。\n\n"
    "- 水压不足、水质发黄：先联系物业；\n"
    "- 物业不处理的，可拨打自来水公司报修电话 96116；\n"
    "- 清洗消毒每半年至少一次，见[卫生规范](https://water.example.gov.cn/rules.pdf)。\n"
)


def _usage(site, article_id: int) -> None:
    """Some days of work: direct answers citing articles, two "did not answer" reports on
    the new article, and direct answers given without an article."""
    now = site.clock.now()
    with session_scope(site.session_factory) as session:
        operator = session.scalars(select(User).where(col(User.username) == "operator")).one()
        demo = session.scalars(
            select(KnowledgeArticle).order_by(col(KnowledgeArticle.id)).limit(4)
        ).all()
        assert operator.id is not None
        for n, article in enumerate([*demo, *demo[:2], demo[0]]):
            assert article.id is not None and article.published_version is not None
            session.add(
                KnowledgeUse(
                    article_id=article.id,
                    version=article.published_version,
                    kind=UseKind.answered,
                    user_id=operator.id,
                    at=now - timedelta(days=n),
                )
            )
        for n, note in enumerate(("市民问的是水箱清洗费用由谁承担", "问的是高层加压泵夜间噪音")):
            ticket = new_ticket(session, now, f"二次供水咨询{n}")
            session.add(
                KnowledgeUse(
                    article_id=article_id,
                    version=1,
                    kind=UseKind.not_answered,
                    ticket_id=ticket.id,
                    user_id=operator.id,
                    at=now - timedelta(hours=n + 1),
                    note=note,
                )
            )
        for text, code, name in (
            ("广场舞音响太吵", "0501", "噪声污染"),
            ("夜间施工噪音", "0501", "噪声污染"),
            ("公交线路调整咨询", "0601", "公共交通"),
        ):
            ticket = new_ticket(session, now, text, category_code=code, category_name=name)
            tickets.close_at_intake(
                session, ticket=ticket, answer="已解答", actor="operator:1", now=now
            )


def test_a_handler_drafts_the_supervisor_approves_and_search_finds_it(site, page, chromium):
    sign_in(page, site, "water.handler")
    page.goto(f"{site.url}/knowledge")
    expect(page.locator("h1")).to_contain_text("知识库")
    shot(page, "knowledge-list")

    page.click(".kb-tabs >> text=新建条目")
    page.fill("input[name=title]", "二次供水水箱清洗及水压不足的处理")
    page.fill("input[name=category_code]", "02x3")
    page.fill("input[name=policy_source]", "生活饮用水卫生监督管理办法")
    page.fill("input[name=document_number]", "建设部 卫生部令第53号")
    page.fill("input[name=review_due]", "2027-06-30")
    page.fill("textarea[name=body]", BODY)
    page.click("button:has-text('保存草稿')")
    expect(page.locator("#err-category_code")).to_be_visible()
    expect(page.locator("textarea[name=body]")).to_have_value(BODY)
    shot(page, "knowledge-form-refused")
    page.fill("input[name=category_code]", "0203")
    page.click("button:has-text('保存草稿')")
    expect(page.locator(".alert.ok")).to_have_text("草稿已保存。")
    expect(page.locator("#kb-body strong")).to_have_text("物业或产权单位")
    article_url = page.url.split("?")[0]
    page.click("button:has-text('提交审核')")
    expect(page.locator(".alert.ok")).to_contain_text("已提交热线中心审核")

    with new_page(chromium) as (centre, seen):
        sign_in(centre, site, "supervisor")
        centre.goto(f"{site.url}/knowledge/review")
        expect(centre.locator("#kb-review")).to_contain_text("二次供水水箱清洗")
        shot(centre, "knowledge-review")
        centre.click("#kb-review >> text=二次供水水箱清洗及水压不足的处理")
        expect(centre.locator("h1")).to_contain_text("二次供水水箱清洗")
        centre.click("button:has-text('审核通过并发布第1版')")
        expect(centre.locator(".alert.ok")).to_contain_text("审核通过")
        expect(centre.locator("h1 .badge")).to_have_text("已发布")
        shot(centre, "knowledge-article")
        assert seen.errors == []

    with new_page(chromium) as (operator, seen):
        sign_in(operator, site, "operator")
        operator.goto(f"{site.url}/knowledge")
        operator.fill("input[name=q]", "水箱多久清洗一次 水压不足")
        operator.press("input[name=q]", "Enter")
        hit = operator.locator("#kb-hits li", has_text="二次供水水箱清洗及水压不足的处理")
        expect(hit).to_be_visible(timeout=SLOW)
        expect(hit.locator(".kb-why mark").first).to_be_visible()
        shot(operator, "knowledge-search")
        assert seen.errors == []

    _usage(site, int(article_url.rsplit("/", 1)[1]))

    # The handler, still on the edit form of version 1, is told someone saved meanwhile.
    page.goto(f"{article_url}/edit")
    with new_page(chromium) as (other, _):
        sign_in(other, site, "dispatcher")
        other.goto(f"{article_url}/edit")
        other.fill("input[name=region]", "榆阳区")
        other.click("button:has-text('保存新版本')")
        expect(other.locator(".alert.ok")).to_have_text("新版本已保存。")
    page.fill("input[name=title]", "二次供水设施维护与水压不足")
    page.click("button:has-text('保存新版本')")
    expect(page.locator("#kb-conflict")).to_be_visible()
    expect(page.locator("input[name=title]")).to_have_value("二次供水设施维护与水压不足")
    expect(page.locator("input[name=region]")).to_have_value("榆阳区")  # theirs, taken in
    expect(page.locator("#kb-conflict")).to_contain_text("适用区域")
    shot(page, "knowledge-conflict")
    page.click("button:has-text('保存新版本')")
    expect(page.locator(".alert.ok")).to_have_text("新版本已保存。")
    page.click("#kb-history >> text=查看并对比")
    expect(page.locator("#kb-diff")).to_be_visible()
    page.goto(f"{article_url}?version=3#kb-diff")
    expect(page.locator("#kb-diff")).to_contain_text("第3版与第2版对比")
    expect(page.locator("#kb-diff")).not_to_contain_text("榆阳区")  # the region survived
    shot(page, "knowledge-diff")

    page.goto(f"{site.url}/knowledge/feedback")
    expect(page.locator("#kb-feedback tbody tr")).to_have_count(2)
    shot(page, "knowledge-feedback")
    page.goto(f"{site.url}/knowledge/dashboard")
    expect(page.locator(".kb-tile .kb-figure").nth(2)).to_have_text("2")
    shot(page, "knowledge-dashboard")

    # The same pages in English.
    page.click("button[lang=en]")
    expect(page.locator("h1")).to_contain_text("Knowledge dashboard")
    for name, path in (
        ("knowledge-list", "/knowledge"),
        ("knowledge-form-refused", "/knowledge/new"),
        ("knowledge-article", article_url.removeprefix(site.url)),
        ("knowledge-diff", f"{article_url.removeprefix(site.url)}?version=3#kb-diff"),
        ("knowledge-search", "/knowledge?q=水箱多久清洗一次+水压不足"),
        ("knowledge-feedback", "/knowledge/feedback"),
        ("knowledge-dashboard", "/knowledge/dashboard"),
    ):
        page.goto(f"{site.url}{path}")
        if name == "knowledge-form-refused":
            page.fill("input[name=title]", "Secondary water supply")
            page.fill("textarea[name=body]", BODY)
            page.fill("input[name=category_code]", "02x3")
            page.click("button:has-text('Save draft')")
            expect(page.locator("#err-category_code")).to_be_visible()
        shot(page, name)
    with new_page(chromium) as (centre, _):
        sign_in(centre, site, "supervisor")
        centre.goto(f"{site.url}/knowledge/dashboard")
        expect(centre.locator("#kb-missing")).to_contain_text("噪声污染")
        shot(centre, "knowledge-dashboard-centre")
        centre.goto(f"{site.url}/knowledge/review")
        centre.click("button[lang=en]")
        expect(centre.locator("h1")).to_have_text("Review queue")
        shot(centre, "knowledge-review")
        centre.goto(f"{site.url}/knowledge/dashboard")
        shot(centre, "knowledge-dashboard-centre")
