"""Seats in the database (hotline.calls.seats): the services the CLI and the admin page
call, and ``DbSeatStore``, the registrar's storage every edge shares — on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from core.db import make_engine, make_session_factory, session_scope
from core.errors import Conflict, InvalidInput, NotFound
from hotline.calls.seats import (
    DbSeatStore,
    create_seat,
    disable_seat,
    list_seats,
    reset_password,
)
from hotline.tables import metadata
from telephony.sip_registrar import SeatBinding, seat_target
from tests.conftest import START

REALM = "centre.test"


@pytest.fixture
def store(fresh_db_url: str) -> Iterator[DbSeatStore]:
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    yield DbSeatStore(make_session_factory(engine))
    engine.dispose()


def _session(store: DbSeatStore):
    return session_scope(store._session_factory)


def _binding(contact: str, *, at=START, seconds: int = 300, cseq: int = 1) -> SeatBinding:
    return SeatBinding(
        extension="1001",
        contact=contact,
        received=("192.0.2.10", 40000),
        expires_at=at + timedelta(seconds=seconds),
        call_id="c1",
        cseq=cseq,
        updated_at=at,
        user_agent="desk phone",
        edge_id="edge-1",
    )


def test_given_new_seat_then_credentials_hold_its_hashes_not_its_password(store):
    with _session(store) as session:
        seat, password = create_seat(
            session=session, extension="1001", display_name=" desk 1 ", realm=REALM, now=START
        )

    creds = store.credentials("1001")
    assert creds is not None and creds.enabled and creds.realm == REALM
    assert seat.display_name == "desk 1" and len(password) == 16
    assert password not in (creds.ha1_md5, creds.ha1_sha256)
    assert store.credentials("1002") is None


def test_given_taken_or_bad_extension_then_refused(store):
    with _session(store) as session:
        create_seat(session=session, extension="1001", realm=REALM, now=START)
    with pytest.raises(Conflict), _session(store) as session:
        create_seat(session=session, extension="1001", realm=REALM, now=START)
    with pytest.raises(InvalidInput), _session(store) as session:
        create_seat(session=session, extension="desk", realm=REALM, now=START)
    with pytest.raises(InvalidInput), _session(store) as session:
        create_seat(
            session=session, extension="1002", display_name="x" * 101, realm=REALM, now=START
        )


def _seat_1001(store: DbSeatStore) -> None:
    with _session(store) as session:
        create_seat(session=session, extension="1001", realm=REALM, now=START)


def test_binding_saved_refreshed_and_removed_with_one_row_per_contact(store):
    _seat_1001(store)
    store.save_binding(_binding("sip:1001@10.0.0.5:5060"))
    store.save_binding(_binding("sip:1001@10.0.0.5:5060", at=START + timedelta(seconds=60), cseq=2))
    store.save_binding(_binding("sip:1001@10.0.0.6:5060", at=START + timedelta(seconds=30)))

    found = store.bindings("1001", START + timedelta(seconds=61))
    assert [(b.contact, b.cseq) for b in found] == [
        ("sip:1001@10.0.0.5:5060", 2),
        ("sip:1001@10.0.0.6:5060", 1),
    ]
    assert found[0].received == ("192.0.2.10", 40000) and found[0].edge_id == "edge-1"
    assert found[0].expires_at == START + timedelta(seconds=360)
    assert seat_target(store, "1001", START + timedelta(seconds=61)) == (
        "sip:1001@10.0.0.5:5060;alias=192.0.2.10~40000~1"
    )

    store.remove_binding("1001", "sip:1001@10.0.0.5:5060")
    assert [b.contact for b in store.bindings("1001", START)] == ["sip:1001@10.0.0.6:5060"]
    store.remove_bindings("1001")
    assert store.bindings("1001", START) == []


def test_expired_bindings_are_not_returned_and_go_when_the_seat_registers_again(store):
    _seat_1001(store)
    store.save_binding(_binding("sip:1001@10.0.0.5:5060", seconds=60))
    store.save_binding(_binding("sip:1001@10.0.0.6:5060", seconds=600))
    later = START + timedelta(seconds=61)

    assert [b.contact for b in store.bindings("1001", later)] == ["sip:1001@10.0.0.6:5060"]
    assert len(store.bindings("1001", START)) == 2  # the expired one is still a row
    store.save_binding(_binding("sip:1001@10.0.0.7:5060", at=later))
    assert [b.contact for b in store.bindings("1001", START)] == [
        "sip:1001@10.0.0.7:5060",
        "sip:1001@10.0.0.6:5060",
    ]


def test_list_seats_shows_registration_state_and_disable_and_reset_end_registrations(store):
    with _session(store) as session:
        create_seat(session=session, extension="1002", realm=REALM, now=START)
        create_seat(
            session=session, extension="1001", display_name="desk 1", realm=REALM, now=START
        )
    store.save_binding(_binding("sip:1001@10.0.0.5:5060"))

    with _session(store) as session:
        views = list_seats(session=session, now=START)
    assert [(v.extension, v.registered, v.enabled) for v in views] == [
        ("1001", True, True),
        ("1002", False, True),
    ]
    assert views[0].received == "192.0.2.10:40000" and views[0].user_agent == "desk phone"

    with _session(store) as session:
        reset_password(session=session, extension="1001", realm=REALM)
    assert store.bindings("1001", START) == []

    store.save_binding(_binding("sip:1001@10.0.0.5:5060"))
    with _session(store) as session:
        disable_seat(session=session, extension="1001")
        views = list_seats(session=session, now=START)
    assert store.bindings("1001", START) == []
    assert (views[0].enabled, views[0].registered) == (False, False)
    creds = store.credentials("1001")
    assert creds is not None and not creds.enabled


def test_given_unknown_seat_then_reset_and_disable_raise_not_found(store):
    with pytest.raises(NotFound), _session(store) as session:
        reset_password(session=session, extension="1999", realm=REALM)
    with pytest.raises(NotFound), _session(store) as session:
        disable_seat(session=session, extension="1999")


def test_given_a_binding_written_after_the_seat_was_disabled_then_it_does_not_ring(store):
    """A REGISTER checked before the disabling and stored after it."""
    _seat_1001(store)
    with _session(store) as session:
        disable_seat(session=session, extension="1001")

    store.save_binding(_binding("sip:1001@10.0.0.5:5060"))

    assert store.bindings("1001", START) == []
    assert seat_target(store, "1001", START) is None


def test_bindings_of_a_seat_that_does_not_exist_are_never_returned(store):
    store.save_binding(_binding("sip:1001@10.0.0.5:5060"))

    assert store.bindings("1001", START) == []
