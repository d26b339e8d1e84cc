"""The admin workspace in Chromium: the admin creates a handler for a unit (the first
password shown once), the handler signs in with it and is made to change it; the admin
deactivates and reactivates them; a rule edited with an invalid definition is refused in
words beside the field and stays as it was, then is fixed; the dry run shows the fixed rule
firing for a pasted text; a holiday goes into the calendar; a greeting is replaced with an
uploaded WAV. Screenshots of every admin section in Chinese and English."""

from __future__ import annotations

import io
import wave

import numpy as np
from playwright.sync_api import expect

from tests.web.browser import new_page, shot, sign_in

NEW_PASSWORD = "Shui-Wu-2026!"
# The first dry run loads the word segmenter (jieba) into the server: seconds on a busy host.
SLOW = 20_000
SECTIONS = (
    ("admin", "/admin"),
    ("admin-units", "/admin/units"),
    ("admin-unit", "/admin/units/WATER"),
    ("admin-users", "/admin/users?unit=WATER"),
    ("admin-rules", "/admin/rules"),
    ("admin-policies", "/admin/policies"),
    ("admin-calendar", "/admin/calendar?year=2027"),
    ("admin-prompts", "/admin/prompts"),
    ("admin-audit", "/admin/audit"),
)


def _wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        t = np.arange(16000) / 16000
        w.writeframes((3000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes())
    return buffer.getvalue()


def test_admin_accounts_rules_dry_run_calendar_and_prompts(site, page, chromium):
    sign_in(page, site, "admin")
    page.goto(f"{site.url}/admin")
    expect(page.locator("h1")).to_have_text("系统管理")

    # A handler for the water company: the first password is shown once.
    page.goto(f"{site.url}/admin/units/WATER")
    page.click("text=在本单位新建账号")
    page.fill("input[name=username]", "zhao.lei")
    page.fill("input[name=display_name]", "赵磊")
    page.select_option("select[name=role]", "handler")
    expect(page.locator("select[name=unit_code]")).to_have_value("WATER")
    page.click("button:has-text('创建账号')")
    expect(page.locator(".alert.ok.secret")).to_contain_text("zhao.lei")
    first_password = page.locator("#new-password").inner_text().strip()
    shot(page, "admin-user-created")

    with new_page(chromium) as (handler, seen):
        sign_in(handler, site, "zhao.lei", first_password)
        expect(handler).to_have_url(f"{site.url}/account?must_change=1")
        expect(handler.locator(".alert.warn")).to_contain_text("管理员重置")
        handler.fill("input[name=current]", first_password)
        handler.fill("input[name=new]", NEW_PASSWORD)
        handler.fill("input[name=repeat]", NEW_PASSWORD)
        handler.click("button:has-text('修改密码')")
        expect(handler.locator(".alert.ok")).to_be_visible()

        # Deactivated: the handler's next page is the sign-in form; reactivated: back in.
        page.click(".secret a")
        page.click("button:has-text('停用')")
        expect(page.locator(".alert.ok")).to_have_text("账号已停用，不能再登录。")
        expect(page.locator("h1 .badge")).to_have_text("已停用")
        handler.goto(site.url)
        expect(handler).to_have_url(f"{site.url}/signin")
        page.click("button:has-text('重新启用')")
        expect(page.locator(".alert.ok")).to_have_text("账号已重新启用，可以登录。")
        shot(page, "admin-user")
        sign_in(handler, site, "zhao.lei", NEW_PASSWORD)
        expect(handler).to_have_url(f"{site.url}/")
        assert seen.errors == []

    # A rule with an invalid pattern is refused beside the field and stays as it was.
    page.goto(f"{site.url}/admin/rules")
    page.fill("input[name=q]", "井盖缺失")
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(1)
    rows.first.locator("a").first.click()
    expect(page.locator("h1")).to_have_text("井盖缺失")
    rule_url = page.url
    page.fill("textarea[name=regex]", "井盖(丢")
    page.click("button:has-text('保存规则')")
    expect(page.locator("#err-conditions-regex")).to_contain_text("不是有效的正则表达式")
    expect(page.locator(".alert.error")).to_contain_text("现行规则保持不变")
    expect(page.locator("textarea[name=regex]")).to_have_attribute("aria-invalid", "true")
    shot(page, "admin-rule-refused")
    page.goto(rule_url)
    expect(page.locator("textarea[name=regex]")).to_have_value("")
    keywords = page.locator("textarea[name=text_any]")
    keywords.fill(keywords.input_value() + "\n马葫芦")
    page.click("button:has-text('保存规则')")
    expect(page.locator(".alert.ok")).to_contain_text("规则已保存")

    # The dry run: the fixed rule fires for a pasted text (htmx swaps only the result).
    page.click("nav.admin-tabs >> text=派单试算")
    page.fill("textarea[name=text]", "人民路口的马葫芦盖子没了，晚上黑，已经有人差点掉下去")
    page.click("button:has-text('试算')")
    expect(page.locator("#result .verdict")).to_contain_text("井盖缺失", timeout=SLOW)
    expect(page.locator("#result .ranking tbody tr").first).to_contain_text("命中")
    shot(page, "admin-dry-run")

    # A holiday in a year the bundled calendar does not know yet.
    page.goto(f"{site.url}/admin/calendar?year=2031")
    expect(page.locator("#year-data")).to_have_text("未录入")
    expect(page.locator("#year-state")).to_have_class("badge warn")  # nobody confirmed it
    page.fill("input[name=day]", "2031-10-01")
    page.fill("input[name=name]", "国庆节")
    page.click("button:has-text('保存日期')")
    expect(page.locator(".alert.ok")).to_have_text("日期已保存。")
    expect(page.locator(".side table")).to_contain_text("国庆节")
    expect(page.locator("td.holiday[title='2031-10-01']")).to_have_count(1)
    # Checked against the notice: the administrator confirms the year.
    page.fill("#year-2031 input[name=note]", "国办发明电〔2030〕7号")
    page.click("#year-2031 button[type=submit]")
    expect(page.locator("#year-state")).to_have_class("badge ok")
    expect(page.locator("#year-2031")).to_contain_text("国办发明电〔2030〕7号")
    shot(page, "admin-calendar-confirmed")

    # The greeting replaced with a recording, then playable.
    page.goto(f"{site.url}/admin/prompts")
    page.set_input_files(
        "#prompt-greeting input[type=file]",
        files=[{"name": "greeting.wav", "mimeType": "audio/wav", "buffer": _wav()}],
    )
    page.click("#prompt-greeting button")
    expect(page.locator(".alert.ok")).to_contain_text("提示音已替换")
    expect(page.locator("#prompt-greeting audio")).to_have_count(1)

    for name, path in SECTIONS:
        page.goto(f"{site.url}{path}")
        shot(page, name)
    page.click("button[lang=en]")
    expect(page.locator("h1")).to_contain_text("Audit trail")
    for name, path in (*SECTIONS, ("admin-dry-run", "/admin/rules/dry-run")):
        page.goto(f"{site.url}{path}")
        shot(page, name)
    page.fill("textarea[name=text]", "人民路口的马葫芦盖子没了，晚上黑，已经有人差点掉下去")
    page.click("button:has-text('Try it')")
    expect(page.locator("#result .verdict")).to_contain_text("井盖缺失", timeout=SLOW)
    shot(page, "admin-dry-run")
    page.goto(rule_url)
    page.fill("textarea[name=regex]", "井盖(丢")
    page.click("button:has-text('Save rule')")
    expect(page.locator("#err-conditions-regex")).to_be_visible()
    shot(page, "admin-rule-refused")
