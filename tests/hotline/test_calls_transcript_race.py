"""The operator and the transcript race for a call's ticket: the form opens as the call ends,
the words come when the recording is decoded. Whoever comes first, the words reach the
ticket; only the placeholder, which nobody wrote, gives way to them. On both backends, with
the call services opening the ticket as at a real answer."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlmodel import col

from core.db import saved_id
from dispatch import closing
from hotline.calls import intake as call_intake
from telephony.models import TranscribedBy
from tests.hotline.conftest import ticket_of
from tests.telephony.fakes import FakeCall
from tickets import service as tickets
from tickets.models import Status, TicketEvent, TicketUpdate

WORDS = "人民路12号自来水管爆了，水一直往外冒"


def _answered(db, make_services, call_id: str) -> int:
    make_services(None).on_answered(FakeCall(call_id=call_id, remote_number="13800006666"))
    ticket, _ = ticket_of(db, call_id)
    assert ticket.description == call_intake.PLACEHOLDER
    return saved_id(ticket)


def _words_arrive(db, clock, settings, call_id: str) -> None:
    with db.session() as s:
        call_intake.attach_transcript(
            s,
            call_id=call_id,
            text=WORDS,
            transcribed_by=TranscribedBy.offline,
            now=clock.now(),
            settings=settings,
        )
        s.commit()


def _call_notes(db, ticket_id: int) -> list[dict]:
    with db.session() as s:
        events = s.scalars(select(TicketEvent).where(col(TicketEvent.ticket_id) == ticket_id)).all()
    return [e.data for e in events if (e.data or {}).get("kind") == "call"]


@pytest.mark.parametrize("operator_first", [True, False], ids=["operator-first", "words-first"])
def test_given_an_operator_description_then_it_stays_and_the_words_are_kept_beside_it(
    db, make_services, clock, settings, operator_first
):
    ticket_id = _answered(db, make_services, "own-words@pbx")
    mine = "来电人反映人民路水管爆裂"

    def operator_writes():
        with db.session() as s:
            ticket = tickets.get_ticket(s, ticket_id, for_update=True)
            update = TicketUpdate(description=mine)
            tickets.update_ticket(s, ticket=ticket, data=update, actor="op", now=clock.now())
            s.commit()

    if operator_first:
        operator_writes()
        _words_arrive(db, clock, settings, "own-words@pbx")
    else:
        _words_arrive(db, clock, settings, "own-words@pbx")
        operator_writes()  # a correction after the words: theirs, as any edit is

    ticket, record = ticket_of(db, "own-words@pbx")
    assert ticket.description == mine and record.transcript == WORDS
    [note] = _call_notes(db, ticket_id)
    assert note["transcript"] == WORDS
    assert [c.transcript for c in call_intake.ticket_calls(db.session(), ticket_id=ticket_id)] == [
        WORDS
    ]


def test_given_the_ticket_closed_at_intake_first_then_the_words_still_reach_it_once(
    db, make_services, clock, settings
):
    ticket_id = _answered(db, make_services, "answered@pbx")
    with db.session() as s:
        operator = db.world.staff["operator"]
        closing.close_at_intake(
            s, ticket_id=ticket_id, answer="已告知办理地点", actor=operator, now=clock.now()
        )
        s.commit()

    _words_arrive(db, clock, settings, "answered@pbx")
    _words_arrive(db, clock, settings, "answered@pbx")  # a retried task: nothing twice

    ticket, record = ticket_of(db, "answered@pbx")
    assert ticket.status == Status.closed and record.transcript == WORDS
    assert [n["transcript"] for n in _call_notes(db, ticket_id)] == [WORDS]
