"""The calls API: call records, recordings and the live transcript stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import Engine

from core.clock import FrozenClock
from core.db import make_engine, make_session_factory, session_scope
from core.settings import Settings
from hotline.calls import intake as call_intake
from hotline.calls import records as call_records
from hotline.tables import metadata
from telephony.endpoint import CallDirection, Disposition
from telephony.models import CallbackAttempt, CallRecord, TranscribedBy
from tests import services
from tests.conftest import START, wait_until
from tests.factories import build_world
from tests.speech import write_wav
from tests.telephony.fakes import FakeCall
from web.app import create_app


def cdr(session, call_id: str, *, minutes: int = 0, **fields) -> CallRecord:
    row = CallRecord.model_validate(
        {
            "call_id": call_id,
            "direction": CallDirection.INBOUND,
            "from_uri": "sip:13800000000@caller.test",
            "to_uri": "sip:12345@hotline.test",
            "caller_number": "13800000000",
            "arrived_at": START + timedelta(minutes=minutes),
            "created_at": START,
            "updated_at": START,
            **fields,
        }
    )
    session.add(row)
    session.commit()
    return row


def test_given_calls_when_listed_then_newest_first_filtered_and_paged(client, session, auth):
    for minute, call_id in enumerate(["c0@pbx", "c1@pbx", "c2@pbx"]):
        cdr(session, call_id, minutes=minute)
    cdr(
        session,
        "out@pbx",
        minutes=9,
        direction=CallDirection.OUTBOUND,
        disposition=Disposition.NO_ANSWER,
    )

    page = client.get("/api/v1/calls", params={"limit": 2}, headers=auth("operator")).json()
    assert [c["call_id"] for c in page["items"]] == ["out@pbx", "c2@pbx"]
    rest = client.get(
        "/api/v1/calls",
        params={"limit": 2, "cursor": page["next_cursor"]},
        headers=auth("operator"),
    ).json()
    assert [c["call_id"] for c in rest["items"]] == ["c1@pbx", "c0@pbx"]
    assert rest["next_cursor"] is None
    outbound = client.get(
        "/api/v1/calls", params={"direction": "outbound"}, headers=auth("supervisor")
    ).json()["items"]
    assert [(c["call_id"], c["disposition"]) for c in outbound] == [("out@pbx", "no_answer")]


def test_given_a_call_when_read_then_record_and_recording_reach_the_centre_only(
    client, session, auth, tmp_path
):
    wav = write_wav(tmp_path / "rec.wav", b"\x01\x00" * 8000, 8000)
    cdr(
        session,
        "abc/def@pbx",
        recording_path=str(wav),
        transcript="로이버 먹",
        transcribed_by=TranscribedBy.live,
    )

    read = client.get("/api/v1/calls/abc/def@pbx", headers=auth("dispatcher"))
    assert read.status_code == 200
    assert read.json()["has_recording"] and read.json()["transcript"] == "로이버 먹"
    audio = client.get("/api/v1/calls/abc/def@pbx/recording", headers=auth("operator"))
    assert audio.headers["content-type"] == "audio/wav"
    assert audio.content == Path(wav).read_bytes()

    assert client.get("/api/v1/calls", headers=auth("water.handler")).status_code == 403
    assert (
        client.get("/api/v1/calls/abc/def@pbx/recording", headers=auth("water.handler")).status_code
        == 403
    )
    missing = client.get("/api/v1/calls/nope@pbx", headers=auth("operator"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    cdr(session, "silent@pbx")
    assert (
        client.get("/api/v1/calls/silent@pbx/recording", headers=auth("operator")).status_code
        == 404
    )


def test_given_a_ticket_when_its_calls_and_callbacks_are_asked_then_they_are_listed(
    client, session, auth, world, clock
):
    from tests.factories import new_ticket

    ticket = new_ticket(session, clock.now(), "电话受理")
    session.commit()
    cdr(session, "t1@pbx", ticket_id=ticket.id)
    cdr(session, "other@pbx")
    session.add(
        CallbackAttempt.model_validate(
            {"ticket_id": ticket.id, "number": "13800000000", "due_at": START, "created_at": START}
        )
    )
    session.commit()

    listed = client.get(f"/api/v1/tickets/{ticket.id}/calls", headers=auth("operator")).json()
    assert [c["call_id"] for c in listed] == ["t1@pbx"]
    attempts = client.get(f"/api/v1/tickets/{ticket.id}/callbacks", headers=auth("operator")).json()
    assert [(a["attempt_no"], a["outcome"]) for a in attempts] == [(1, None)]


# ---------------------------------------------------------------- the live transcript stream


@pytest.fixture
def live_site(fresh_db_url, tmp_path) -> Iterator[tuple[str, Engine, dict[str, str]]]:
    """The app served by a real uvicorn on a database of the test's own: the stream is
    read while another thread writes the call record, as the SIP process would."""
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    factory = make_session_factory(engine)
    with factory() as s:
        world = build_world(s, START)
        s.commit()
    app = create_app(
        settings=Settings(environment="test", data_dir=tmp_path),
        session_factory=factory,
        clock=FrozenClock(START),
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=services.free_port(),
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,  # open live streams are cut, as `hotline web` does
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, message="uvicorn started")
        base = f"http://127.0.0.1:{server.config.port}/api/v1"
        headers = {"Authorization": f"Bearer {world.tokens['operator']}"}
        yield base, engine, headers
    finally:
        server.should_exit = True
        thread.join(10)
        engine.dispose()


def sse_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    event, data = None, None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif not line and event:
            yield event, data
            event, data = None, None


def test_given_a_call_being_transcribed_when_streamed_then_partials_then_final_then_closed(
    live_site, tmp_path
):
    base, engine, headers = live_site
    factory = make_session_factory(engine)
    settings = Settings(environment="test", data_dir=tmp_path)
    call = FakeCall(call_id="sse-1@pbx.test")
    with session_scope(factory) as s:
        ticket = call_intake.open_ticket(s, call=call, now=START, settings=settings)
        call_records.upsert_call(s, call=call, now=START, ticket_id=ticket.id)
    seen = threading.Event()

    def sip_process() -> None:
        for text in ("로이버", "로이버 먹"):
            with session_scope(factory) as s:
                call_records.set_live_text(s, call_id=call.call_id, text=text, now=START)
            assert seen.wait(20)
            seen.clear()
        with session_scope(factory) as s:
            call_intake.attach_transcript(
                s,
                call_id=call.call_id,
                text="로이버 먹 리라",
                transcribed_by=TranscribedBy.live,
                now=START,
                settings=settings,
            )

    writer = threading.Thread(target=sip_process, daemon=True)
    got = []
    with httpx.stream(
        "GET", f"{base}/calls/{call.call_id}/transcript/stream", headers=headers, timeout=30
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        writer.start()
        for event, data in sse_events(response):
            got.append((event, data))
            if event == "partial":
                seen.set()
    writer.join(10)

    assert got == [
        ("partial", {"seq": 1, "text": "로이버"}),
        ("partial", {"seq": 2, "text": "로이버 먹"}),
        ("final", {"text": "로이버 먹 리라", "transcribed_by": "live", "ticket_id": ticket.id}),
    ]


def test_given_a_quiet_call_when_streamed_then_it_times_out_and_unknown_calls_are_404(live_site):
    base, engine, headers = live_site
    with session_scope(make_session_factory(engine)) as s:
        call_records.upsert_call(s, call=FakeCall(call_id="quiet@pbx"), now=START)
    with httpx.stream(
        "GET",
        f"{base}/calls/quiet@pbx/transcript/stream",
        params={"timeout_s": 0.5},
        headers=headers,
        timeout=30,
    ) as response:
        assert list(sse_events(response)) == [("timeout", {"seq": 0})]
    missing = httpx.get(f"{base}/calls/nope@pbx/transcript/stream", headers=headers)
    assert missing.status_code == 404
