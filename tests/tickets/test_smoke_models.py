from tickets.intake import create_ticket
from tickets.models import Channel, Status, TicketCreate
from tickets.service import events_of, rebuild_state, snapshot


def test_given_intake_payload_when_created_then_ticket_has_number_and_create_event(session, clock):
    intake = create_ticket(
        session,
        data=TicketCreate(description="路灯不亮", channel=Channel.api),
        actor="user:1",
        now=clock.now(),
    )
    t = intake.ticket
    assert t.status == Status.intake
    assert t.number == "20261127-000001"
    events = events_of(session, t.id)
    assert [e.action for e in events] == ["create"]
    assert rebuild_state(events) == snapshot(t)
