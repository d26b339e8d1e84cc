"""The console's call controls in Chromium, with the edge's side running: the operator's
ticket view of a bridged call shows "This call"; Hold puts the caller on hold (the bridge's
own state, written back by the edge and brought to the page by its live stream), Resume
takes them back, "Consult first" to a colleague's seat rings it and, once answered, "Three-way
call" joins the three. The edge here is ``CallControl`` on a real ``Bridge`` between calls fed
in real time (the SIP legs are tests/cli/test_sip_call_control.py's); the doorbell, the
database and the stream are the app's. Screenshots in both languages."""

from __future__ import annotations

import httpx
from playwright.sync_api import expect
from sqlalchemy import select

from accounts.models import User
from core import bell as doorbell
from core.db import session_scope
from hotline.calls.control_runner import CallControl
from telephony.endpoint import CallDirection
from telephony.models import CallRecord, QueueOutcome, Seat
from tests.telephony.fakes import FakeDial, PipeCall
from tests.telephony.sip_peers import tone
from tests.web.browser import shot, sign_in, wait_for_stream, watch_stream
from tests.web.test_tickets import WATER_CUT

CALL = "bridged-browser@edge"


def test_an_operator_holds_consults_and_makes_a_three_way_call_from_the_console(
    site, page, tmp_path
):
    made = httpx.post(
        f"{site.url}/api/v1/tickets",
        headers={"Authorization": f"Bearer {site.token('operator')}"},
        json={"description": WATER_CUT, "channel": "phone", "caller_phone": "13800001111"},
        timeout=20,
    )
    assert made.status_code == 201, made.text
    ticket_id = made.json()["ticket"]["id"]
    now = site.clock.now()
    with session_scope(site.session_factory) as session:
        operator = session.scalars(select(User).where(User.username == "operator")).one()
        session.add(
            Seat(
                extension="8002",
                realm="hotline12345",
                ha1_md5="0" * 32,
                ha1_sha256="0" * 64,
                created_at=now,
            )
        )
        session.add(
            CallRecord(
                call_id=CALL,
                direction=CallDirection.INBOUND,
                caller_number="13800001111",
                arrived_at=now,
                answered_at=now,
                ticket_id=ticket_id,
                queue_outcome=QueueOutcome.agent,
                agent_user_id=operator.id,
                agent_extension="8001",
                edge_id="edge-1",
                created_at=now,
                updated_at=now,
            )
        )
    colleague = PipeCall("leg-8002", remote_number="8002")
    dial = FakeDial(colleague)
    bell = doorbell.for_settings(site.settings)
    control = CallControl(
        site.session_factory,
        site.clock,
        dial=dial,
        seat_target=lambda ext: f"sip:{ext}@127.0.0.1:5999",
        outside_uri=None,
        wrap_up_s=15.0,
        ring_timeout_s=20.0,
        bell=bell,
        poll_s=30.0,  # the doorbell brings each click; a look every 30 s would be too late
    )
    caller, agent = PipeCall(CALL), PipeCall("leg-8001", remote_number="8001")
    control.attach_agent(CALL, operator.id)
    bridge = control.bridge_factory(
        caller, agent, recording_dir=tmp_path, hold_audio=tone(523, 0.1, 2000), read_timeout_s=0.05
    )
    bridge.start()
    control.start()
    try:
        sign_in(page, site, "operator")
        watch_stream(page)
        page.goto(f"{site.url}/console/tickets/{ticket_id}")
        wait_for_stream(page)
        panel = page.locator("#call-control")
        expect(panel).to_be_visible(timeout=10_000)
        expect(panel.locator(".call-state")).to_contain_text("通话中")

        panel.locator("button[value=hold]").click()
        expect(panel.locator(".call-state")).to_contain_text("保持中", timeout=10_000)
        assert bridge.held
        shot(page, "console-call-held")
        panel.locator("button[value=unhold]").click()
        expect(panel.locator(".call-state")).to_contain_text("通话中", timeout=10_000)
        assert not bridge.held

        panel.locator("input[name=target]").fill("8002")
        panel.locator("button[value=consult]").click()
        expect(panel.locator(".call-state")).to_contain_text("正在呼叫 8002", timeout=10_000)
        dial.answer.set()
        expect(panel.locator(".call-state")).to_contain_text("您正在与 8002 通话", timeout=10_000)
        shot(page, "console-call-consulting")
        panel.locator("button[value=three_way]").click()
        expect(panel.locator(".call-state")).to_contain_text("与 8002 三方通话", timeout=10_000)
        assert bridge.three_way
        shot(page, "console-call-three-way")

        page.click("button[lang=en]")
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.locator("#call-control .call-state")).to_contain_text(
            "Three-way with 8002", timeout=10_000
        )
        shot(page, "console-call-three-way")

        caller.far_end_hangs_up()  # the call ends: the controls go away by themselves
        with session_scope(site.session_factory) as session:
            record = session.scalars(select(CallRecord).where(CallRecord.call_id == CALL)).one()
            record.ended_at = site.clock.now()
            record.control_seq += 1
        expect(page.locator("#call-control")).to_be_hidden(timeout=10_000)
    finally:
        control.stop()
        bridge.stop()
        bell.close()
