"""core.db helpers that the write paths rely on."""

from datetime import UTC, datetime

import pytest

from core.db import after_commit, build_row, make_engine, make_session_factory
from tickets.models import Channel, Status, Ticket, TicketEvent

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def test_given_some_values_when_row_built_then_model_defaults_fill_the_rest():
    ticket = build_row(
        Ticket,
        {
            "number": "20261127-000001",
            "channel": Channel.phone,
            "description": "路灯不亮",
            "created_at": NOW,
            "updated_at": NOW,
        },
    )
    assert ticket.status == Status.intake and ticket.return_count == 0
    assert ticket.caller_name is None and ticket.id is None
    assert ticket.model_fields_set == {
        "number",
        "channel",
        "description",
        "created_at",
        "updated_at",
    }


def test_given_default_factory_when_rows_built_then_each_gets_its_own_value():
    a = build_row(TicketEvent, {"ticket_id": 1, "seq": 1, "at": NOW, "actor": "x", "action": "a"})
    b = build_row(TicketEvent, {"ticket_id": 1, "seq": 2, "at": NOW, "actor": "x", "action": "a"})
    a.data["k"] = 1
    assert b.data == {}


def test_given_required_field_missing_when_row_built_then_type_error_names_it():
    with pytest.raises(TypeError, match="Ticket.number"):
        build_row(Ticket, {"channel": Channel.phone, "created_at": NOW, "updated_at": NOW})


def test_given_built_row_when_added_and_flushed_then_it_is_inserted_with_its_values(session):
    ticket = build_row(
        Ticket,
        {
            "number": "T-build-row",
            "channel": Channel.web,
            "description": "小区停水",
            "created_at": NOW,
            "updated_at": NOW,
        },
    )
    ticket.title = "停水"  # an instrumented change after building
    session.add(ticket)
    session.flush()
    session.expire_all()
    stored = session.get(Ticket, ticket.id)
    assert (stored.number, stored.channel, stored.title) == ("T-build-row", Channel.web, "停水")


def test_given_an_unknown_field_when_row_built_then_type_error_names_it():
    with pytest.raises(TypeError, match="no field colour"):
        build_row(
            Ticket,
            {
                "number": "x",
                "channel": Channel.phone,
                "description": "d",
                "created_at": NOW,
                "updated_at": NOW,
                "colour": "red",
            },
        )


def test_given_a_hook_registered_in_a_savepoint_then_it_runs_at_the_real_commit_only(tmp_path):
    """A SAVEPOINT released is not a commit: a hook (an SSE nudge, a doorbell) registered
    inside ``begin_nested`` waits for the outer commit and is dropped by its rollback."""
    engine = make_engine(f"sqlite:///{tmp_path / 'hooks.db'}")
    factory = make_session_factory(engine)
    ran: list[str] = []
    with factory() as session:
        with session.begin_nested():
            after_commit(session, lambda: ran.append("committed"))
        assert ran == []  # the savepoint released: not yet
        session.commit()
    assert ran == ["committed"]
    with factory() as session:
        with session.begin_nested():
            after_commit(session, lambda: ran.append("rolled back"))
        session.rollback()
        session.commit()
    assert ran == ["committed"]
