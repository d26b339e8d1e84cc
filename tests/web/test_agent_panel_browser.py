"""The agent panel in Chromium: an operator binds seat 1001, goes ready, is moved to not ready
from elsewhere (the API, as the queue's process would) and sees it live without a click, goes
not ready (break), signs out; every move is stored. Screenshots in both languages."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect
from sqlalchemy import select

from accounts.models import AgentStateChange, User
from tests.web.browser import shot, sign_in, wait_for_stream, watch_stream


def test_an_operator_works_the_agent_panel_and_every_move_is_stored(site, page):
    sign_in(page, site, "operator")
    watch_stream(page)
    page.goto(f"{site.url}/console")
    wait_for_stream(page)  # the changes below are the stream's to bring
    state = page.locator("#agent-state")
    expect(state).to_have_attribute("data-state", "signed_out")
    assert "agents" in (page.locator("body").get_attribute("sse-connect") or "")

    page.fill("#agent-seat", "1001")
    # A colleague signs in meanwhile: the panel refreshes live and what was typed stays.
    colleague = httpx.post(
        f"{site.url}/api/v1/agents/me/state",
        headers={"Authorization": f"Bearer {site.token('supervisor')}"},
        json={"state": "signed_in", "extension": "1009"},
        timeout=20,
    )
    assert colleague.status_code == 200, colleague.text
    expect(page.locator("#agent-counts")).to_have_attribute("data-signed-in", "1", timeout=10_000)
    expect(page.locator("#agent-seat")).to_have_value("1001")
    page.click("#agent-sign-in")
    expect(state).to_have_attribute("data-state", "not_ready")
    expect(page.locator("#agent-extension")).to_have_text("1001")
    page.click("#agent-ready")
    expect(state).to_have_attribute("data-state", "ready")
    # Time in state counts up in the browser between the server's refreshes.
    expect(page.locator("#agent-panel .agent-clock")).to_have_text(
        re.compile(r"^0:0[1-9]$"), timeout=5000
    )
    shot(page, "console-agent-ready")

    # Moved from another process: the page's live stream brings it.
    moved = httpx.post(
        f"{site.url}/api/v1/agents/me/state",
        headers={"Authorization": f"Bearer {site.token('operator')}"},
        json={"state": "not_ready", "reason": "training"},
        timeout=20,
    )
    assert moved.status_code == 200, moved.text
    expect(state).to_have_attribute("data-state", "not_ready", timeout=10_000)
    expect(state).to_have_attribute("data-reason", "training")

    page.click("#agent-ready")
    expect(state).to_have_attribute("data-state", "ready")
    page.select_option("#agent-reason", "break")
    page.click("#agent-not-ready")
    expect(state).to_have_attribute("data-state", "not_ready")
    expect(state).to_have_attribute("data-reason", "break")
    shot(page, "console-agent-break")
    page.click("button[lang=en]")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(state).to_contain_text("Not ready · Break")
    shot(page, "console-agent-break")

    page.click("#agent-sign-out")
    expect(state).to_have_attribute("data-state", "signed_out")
    expect(page.locator("#agent-seat")).to_be_visible()

    with site.session_factory() as session:
        operator = session.scalars(select(User).where(User.username == "operator")).one()
        changes = session.scalars(
            select(AgentStateChange)
            .where(AgentStateChange.user_id == operator.id)
            .order_by(AgentStateChange.id)
        ).all()
    assert [
        (c.from_state.value, c.to_state.value, c.reason.value if c.reason else None)
        for c in changes
    ] == [
        ("signed_out", "not_ready", None),
        ("not_ready", "ready", None),
        ("ready", "not_ready", "training"),
        ("not_ready", "ready", None),
        ("ready", "not_ready", "break"),
        ("not_ready", "signed_out", None),
    ]
    assert {c.source for c in changes} == {"console"}
    assert {c.by_user_id for c in changes} == {operator.id}
