"""The wallboard in Chromium at 1366×768: a morning with twelve operators fits on the screen
without scrolling, an operator signing in and a call joining the queue reach it live over
the page's stream without a reload, and the clocks count up between reads. Screenshots in
Chinese and English."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta

import httpx
from playwright.sync_api import expect

from accounts.models import (
    AgentState,
    AgentStateChange,
    AgentStatus,
    NotReadyReason,
    Role,
    User,
)
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome
from tests.web.browser import shot, sign_in
from tests.web.test_wallboard import L, add_call

STATES = [AgentState.ready, AgentState.on_call, AgentState.wrap_up, AgentState.not_ready]


def _crowd(site) -> None:
    """Eleven more operators in every state, a morning of calls, two waiting."""
    with site.session_factory() as session:
        for n in range(11):
            user = User(
                username=f"op{n:02d}",
                display_name=f"话务员 {n:02d} 号",
                role=Role.operator,
                token_hash=secrets.token_hex(32),
                created_at=L(7),
            )
            session.add(user)
            session.flush()
            assert user.id is not None
            state = STATES[n % len(STATES)]
            session.add(
                AgentStatus(
                    user_id=user.id,
                    state=state,
                    reason=NotReadyReason.break_ if state == AgentState.not_ready else None,
                    extension=f"20{n:02d}",
                    since=L(9, 40 + n),
                )
            )
            # Signed in at 08:00, ready until they moved into their state now.
            for at, before, after in (
                (L(8), AgentState.signed_out, AgentState.ready),
                (L(9, 40 + n), AgentState.ready, state),
            ):
                session.add(
                    AgentStateChange(
                        user_id=user.id, from_state=before, to_state=after, at=at, source="acd"
                    )
                )
            for k in range(n % 4):
                add_call(
                    session,
                    L(8, 5 * n + k),
                    wait=6 + 4 * k,
                    outcome=QueueOutcome.agent,
                    agent=user.id,
                    talk=200,
                    wrap=20,
                )
        add_call(session, L(9, 10), wait=3, outcome=QueueOutcome.abandoned)
        add_call(session, L(9, 20), wait=45, outcome=QueueOutcome.abandoned)
        add_call(session, L(9, 30), wait=60, outcome=QueueOutcome.overflowed)
        add_call(session, L(9, 59, 15))
        add_call(session, L(9, 59, 40))
        session.commit()


def test_the_wallboard_fits_the_wall_and_follows_the_centre_live(site, page):
    _crowd(site)
    sign_in(page, site, "supervisor")
    page.goto(f"{site.url}/wallboard")

    expect(page.locator("#wb-waiting")).to_have_attribute("data-waiting", "2")
    expect(page.locator("#wb-longest")).to_have_attribute("data-longest", "40")
    expect(page.locator("#wb-agents tbody tr")).to_have_count(11)
    # op01, on a call since 09:41 of two hours signed in: 19 min / 120 min.
    expect(page.locator("#wb-agents tr:nth-child(2) [data-occupancy]")).to_have_text("16%")
    # Everything on one 1366×768 screen: no scrolling either way.
    size = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    assert size[0] <= 1366 and size[1] <= 768, size
    # The longest wait counts up in the browser between the server's reads.
    expect(page.locator("#wb-longest [data-elapsed]")).not_to_have_text("0:40", timeout=5000)
    shot(page, "wallboard")

    # An operator signs in at a seat (another process, the API): the board hears "agents".
    signed = httpx.post(
        f"{site.url}/api/v1/agents/me/state",
        headers={"Authorization": f"Bearer {site.token('operator')}"},
        json={"state": "signed_in", "extension": "1001"},
        timeout=20,
    )
    assert signed.status_code == 200, signed.text
    expect(page.locator("#wb-states")).to_have_attribute("data-signed-in", "12", timeout=5000)
    expect(page.locator("#wb-agents tbody tr")).to_have_count(12)
    # A call arrives and joins the queue (the edge answers it for the greeting): "calls".
    with site.session_factory() as session:
        now = site.clock.now()
        session.add(
            CallRecord(
                call_id=secrets.token_hex(8),
                direction=CallDirection.INBOUND,
                arrived_at=now - timedelta(seconds=3),
                answered_at=now - timedelta(seconds=3),
                queued_at=now,
                created_at=now,
                updated_at=now,
            )
        )
        session.commit()
    expect(page.locator("#wb-waiting")).to_have_attribute("data-waiting", "3", timeout=5000)
    size = page.evaluate("document.documentElement.scrollHeight")
    assert size <= 768, size

    page.click("button[lang=en]")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#wb-abandoned")).to_contain_text(re.compile(r"of which 1 within 5 s"))
    expect(page.locator("#wb-service h2")).to_have_text("Answered within 15 s")
    shot(page, "wallboard")
