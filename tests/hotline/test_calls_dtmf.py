"""Status by phone and the callback survey end to end over the real SIP edge, with sipp
pressing the keys as RFC 2833 telephone-events (the pcaps Debian's sip-tester ships)."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest
from sqlalchemy import select

from hotline.calls import dialer as call_dialer
from telephony.endpoint import CallState, Disposition
from telephony.flows import FlowSettings, serve_inbound
from telephony.models import CallbackAttempt, CallbackOutcome, CallRecord
from telephony.sip_config import SipConfig
from telephony.sip_edge import SipEdge
from tests.conftest import wait_until
from tests.hotline.conftest import reviewed_ticket
from tests.telephony.fakes import FakePrompts
from tests.telephony.sip_peers import HOST, free_udp_port, start_sipp
from tickets.models import Satisfaction, Status, Ticket

PCAPS = Path("/usr/share/sip-tester")
KEY_FILES = {
    **{str(d): f"dtmf_2833_{d}.pcap" for d in range(10)},
    "#": "dtmf_2833_pound.pcap",
    "*": "dtmf_2833_star.pcap",
}

SDP = """v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16"""


OK_TO_BYE = """  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
  ]]></send>
"""


def keys_xml(keys: str, *, gap_ms: int) -> str:
    """sipp actions pressing `keys`, one RFC 2833 event each, `gap_ms` apart. No pause
    after the last: the platform may hang up at once, and sipp must be waiting for BYE."""
    presses = [
        f'  <nop><action><exec play_pcap_audio="{PCAPS / KEY_FILES[k]}"/></action></nop>'
        for k in keys
    ]
    return f'\n  <pause milliseconds="{gap_ms}"/>\n'.join(presses)


def caller_scenario(path: Path, keys: str, *, hold_ms: int) -> Path:
    path.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<scenario name="caller keying {keys}">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Citizen" <sip:13800000000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:13800000000@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      {SDP}
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: "Citizen" <sip:13800000000@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <pause milliseconds="300"/>
{keys_xml(keys, gap_ms=250)}
  <recv request="BYE" timeout="{hold_ms}"/>
{OK_TO_BYE}</scenario>
""")
    return path


def callee_scenario(path: Path, keys: str) -> Path:
    path.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<scenario name="callee keying {keys}">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
  ]]></send>
  <send retrans="500"><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:13700000000@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      {SDP}
  ]]></send>
  <recv request="ACK" crlf="true"/>
  <pause milliseconds="300"/>
{keys_xml(keys, gap_ms=250)}
  <recv request="BYE" timeout="15000"/>
{OK_TO_BYE}</scenario>
""")
    return path


def finish(sipp) -> str:
    out, _ = sipp.communicate(timeout=30)
    return out


def test_given_a_caller_keying_a_ticket_number_then_hears_its_status_and_deadline(
    db, clock, make_services, settings, tmp_path
):
    with db.session() as s:
        from hotline.intake import submit
        from tickets.models import TicketCreate

        sub = submit(
            s, data=TicketCreate(description="小区停水两天了"), actor=None, now=clock.now()
        )
        s.commit()
        number, deadline = sub.ticket.number, sub.dispatch.assignments[0].reply_due_at
    services = make_services(None)
    asked: queue.Queue = queue.Queue()

    def lookup(digits: str):
        answer = services.lookup_status(digits)
        asked.put((digits, answer))
        return answer

    hooks = services.hooks()
    hooks.lookup_status = lookup
    prompts = FakePrompts()
    flow = FlowSettings(recording_dir=tmp_path, menu_enabled=True)
    calls_seen: queue.Queue = queue.Queue()

    def on_call(call) -> None:
        calls_seen.put(call)
        serve_inbound(call, prompts=prompts, hooks=hooks, settings=flow)

    edge = SipEdge(SipConfig(host=HOST, port=0, rtp_low=40000, rtp_high=45000))
    edge.start(on_call=on_call, on_ended=services.on_ended)
    # 2 = status by ticket number; then the number's digits and # to end it.
    keys = "2" + number.replace("-", "") + "#"
    sipp = start_sipp(
        str(caller_scenario(tmp_path / "status.xml", keys, hold_ms=20000)),
        target=f"{HOST}:{edge.address[1]}",
        timeout=40,
    )
    try:
        call = calls_seen.get(timeout=10)
        digits, answer = asked.get(timeout=30)
        wait_until(lambda: call.state == CallState.ENDED, 20, message="the flow hung up")
        out = finish(sipp)
    finally:
        edge.stop()
        if sipp.poll() is None:
            sipp.kill()
            sipp.communicate(timeout=10)
    assert sipp.returncode == 0, out
    assert digits == number.replace("-", "")
    assert answer.status == Status.dispatched.value and answer.deadline == deadline
    wait_until(
        lambda: db.one(CallRecord, CallRecord.call_id == call.call_id).ended_at is not None,
        10,
        message="the call record",
    )
    record = db.one(CallRecord, CallRecord.call_id == call.call_id)
    assert record.disposition is Disposition.COMPLETED and record.ticket_id is None


@pytest.mark.parametrize(
    ("key", "outcome", "status"),
    [
        ("1", CallbackOutcome.satisfied, Status.closed),
        ("3", CallbackOutcome.dissatisfied, Status.dispatched),
    ],
)
def test_given_a_replied_ticket_when_the_citizen_keys_a_rating_then_the_callback_records_it(
    db, clock, make_services, callback_settings, tmp_path, key, outcome, status
):
    ticket_id = reviewed_ticket(db, clock)
    uas_port = free_udp_port()
    callback_settings.telephony.callback_uri = f"sip:{{number}}@{HOST}:{uas_port}"
    services = make_services(None)
    edge = SipEdge(SipConfig(host=HOST, port=0, rtp_low=45000, rtp_high=50000))
    edge.start(on_call=lambda call: None, on_ended=services.on_ended)
    sipp = start_sipp(str(callee_scenario(tmp_path / "callee.xml", key)), port=uas_port, timeout=40)
    dialer = call_dialer.CallbackDialer(
        services=services,
        endpoint=edge,
        prompts=FakePrompts(),
        flow=FlowSettings(recording_dir=tmp_path),
    )
    try:
        attempt = dialer.run_once()
        out = finish(sipp)
    finally:
        edge.stop()
        if sipp.poll() is None:
            sipp.kill()
            sipp.communicate(timeout=10)
    assert sipp.returncode == 0, out
    assert attempt.outcome is outcome
    with db.session() as s:
        ticket = s.get(Ticket, ticket_id)
        [stored] = s.scalars(select(CallbackAttempt)).all()
    assert ticket.status == status and stored.outcome is outcome
    if outcome is CallbackOutcome.satisfied:
        assert ticket.satisfaction == Satisfaction.satisfied
    else:
        assert ticket.reopen_count == 1
