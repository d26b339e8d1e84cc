"""Kamailio as the seats' registrar (deploy/kamailio/kamailio.cfg with WITH_SEATS), for real on
loopback against the test's PostgreSQL database brought to head by the platform's migrations:
a seat made by the platform's own code registers through Kamailio with digest (its hash read
from the ``subscriber`` view over ``seat``), the binding lands in ``location`` where the pages
and the edges read it, and an edge with a seat proxy rings the seat through Kamailio (a phone
behind NAT at its mapping, kept open by keep-alives). One test is the whole path with the real
`hotline sip`: a citizen's call through Kamailio to the edge, queued, and the operator's phone,
registered only with Kamailio, rung through it.

PostgreSQL only (SQLite is the embedded mode, where the edge is the registrar); the last test
checks that without WITH_SEATS the proxy still answers REGISTER 405."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import col

from accounts import agents
from accounts.models import Role
from accounts.service import create_user
from core.db import make_engine, make_session_factory, saved_id, session_scope
from core.runtime import SessionFactory
from hotline import migrate
from hotline.calls.seats import (
    DbSeatStore,
    create_seat,
    disable_seat,
    list_seats,
    reset_password,
)
from telephony.endpoint import CallFailed, Disposition
from telephony.models import CallRecord, KamailioLocation, QueueOutcome
from telephony.sip_registrar import proxy_uri
from tests import services
from tests.cli.sip_processes import edge_env, sipp_out, start_edge
from tests.conftest import START, wait_until
from tests.telephony.sip_peers import (
    HOST,
    RtpPeer,
    free_udp_port,
    output,
    run_sipp,
    start_sipp,
)
from tests.telephony.sip_peers import start_edge as start_sip_edge
from tests.telephony.test_kamailio_dispatcher import (  # noqa: F401  (fixtures)
    edges,
    options_status,
    start_front,
    status_of,
)

CONFIG = Path(__file__).parents[2] / "deploy" / "kamailio" / "kamailio.cfg"
REALM = "hotline12345"


@dataclass
class Database:
    url: str
    factory: SessionFactory

    @property
    def kamailio_url(self) -> str:
        """The same database as db_postgres spells it."""
        return re.sub(r"^postgresql\+\w+://", "postgres://", self.url)

    def seat(self, extension: str) -> str:
        """A seat made as `hotline seats add` makes it; its password."""
        with session_scope(self.factory) as session:
            _, password = create_seat(
                session=session, extension=extension, realm=REALM, now=datetime.now(UTC)
            )
        return password

    def locations(self) -> list[KamailioLocation]:
        with self.factory() as session:
            return list(session.scalars(select(KamailioLocation)))


@pytest.fixture
def database() -> Iterator[Database]:
    """A PostgreSQL database of the test's own: Kamailio keeps the seats' bindings there
    (SQLite is the embedded mode, where the edge is the registrar)."""
    url, drop = services.create_database("hotline_kamailio")
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        yield Database(url=url, factory=make_session_factory(engine))
    finally:
        engine.dispose()
        drop()


@dataclass
class Registrar:
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def uri(self) -> str:
        return f"sip:{self.target}"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def start_registrar(tmp_path, database: Database) -> Iterator[Callable[..., Registrar]]:
    procs: list[subprocess.Popen] = []

    def start(edges: list[str], *defines: str) -> Registrar:
        """Kamailio with the production config and seats on; ``edges``: "host:port" of the
        dispatcher set (the only sources whose INVITEs ring seats); ``defines``: more -A."""
        listing = tmp_path / f"dispatcher-{len(procs)}.list"
        listing.write_text("".join(f"1 sip:{edge} 8 0\n" for edge in edges))
        port, log = free_udp_port(), tmp_path / f"kamailio-{len(procs)}.log"
        with log.open("w") as sink:
            procs.append(
                subprocess.Popen(
                    [
                        *("kamailio", "-f", str(CONFIG), "-DD", "-E", "-Y", str(tmp_path)),
                        *("-m", "32", "-M", "4"),
                        *("-A", f"LISTEN=udp:{HOST}:{port}", "-A", "WITH_SEATS"),
                        *("-A", f'DBURL="{database.kamailio_url}"'),
                        *("-A", f'SEAT_REALM="{REALM}"'),
                        *("-A", f'DISPATCHER_LIST="{listing}"'),
                        *("-A", f'CTL_SOCKET="unix:{tmp_path / f"ctl-{len(procs)}"}"'),
                        *("-A", "PING_INTERVAL=1"),
                        *(arg for define in defines for arg in ("-A", define)),
                    ],
                    stdout=sink,
                    stderr=sink,
                    stdin=subprocess.DEVNULL,
                )
            )
        registrar = Registrar(port=port, log=log)
        wait_until(
            lambda: procs[-1].poll() is not None or options_status(port) is not None,
            10,
            message="kamailio up",
        )
        assert procs[-1].poll() is None, registrar.tail()
        return registrar

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def register(
    registrar: Registrar,
    extension: str,
    password: str,
    phone: int,
    *,
    refused: bool = False,
    scenario: str = "uac_register.xml",
    expires: int = 300,
) -> subprocess.CompletedProcess:
    """A phone at ``phone`` registers ``extension`` through Kamailio: challenge, digest,
    then 200 (``uac_register.xml``), 403 (``refused``) or 423 (``uac_register_brief.xml``)."""
    return run_sipp(
        "uac_register_refused.xml" if refused else scenario,
        target=registrar.target,
        service=extension,
        port=phone,
        keys={"contact": f"<sip:{extension}@{HOST}:{phone}>", "expires": expires},
        extra=["-au", extension, "-ap", password],
        timeout=5,
    )


def test_given_a_platform_seat_when_its_phone_registers_with_kamailio_then_location_and_pages_have_it(  # noqa: E501
    database, start_registrar
):
    password = database.seat("1001")
    registrar = start_registrar([f"{HOST}:{free_udp_port()}"])
    phone = free_udp_port()

    result = register(registrar, "1001", password, phone)

    assert result.returncode == 0, output(result) + registrar.tail()
    (binding,) = database.locations()
    assert (binding.username, binding.contact) == ("1001", f"sip:1001@{HOST}:{phone}")
    assert binding.user_agent == "sipp seat"
    now = datetime.now(UTC)
    # expires as epoch seconds: Kamailio's clock and ours agree whatever its time zone
    assert 280 <= binding.expires - now.timestamp() <= 301
    with database.factory() as session:
        (seat,) = list_seats(session=session, now=now)
    assert seat.registered and seat.received == f"{HOST}:{phone}"
    assert seat.contact == f"sip:1001@{HOST}:{phone}" and seat.user_agent == "sipp seat"
    proxied = DbSeatStore(database.factory, proxy=registrar.uri)
    assert proxied.dial_target("1001", now) == proxy_uri("1001", (HOST, registrar.port))
    # the edges' own registrar table is empty: without the proxy nothing would ring it
    assert DbSeatStore(database.factory, proxy="").dial_target("1001", now) is None


def test_given_a_wrong_password_or_a_disabled_seat_then_kamailio_answers_403_and_binds_nothing(
    database, start_registrar
):
    password = database.seat("1001")
    disabled_password = database.seat("1002")
    with session_scope(database.factory) as session:
        disable_seat(session=session, extension="1002")
    registrar = start_registrar([f"{HOST}:{free_udp_port()}"])

    wrong = register(registrar, "1001", password[::-1], free_udp_port(), refused=True)
    disabled = register(registrar, "1002", disabled_password, free_udp_port(), refused=True)
    unknown = register(registrar, "1003", password, free_udp_port(), refused=True)
    # 1001's credentials do not register another seat's binding
    borrowed = run_sipp(
        "uac_register_refused.xml",
        target=registrar.target,
        service="1004",
        keys={"contact": f"<sip:1004@{HOST}:5999>", "expires": 300},
        extra=["-au", "1001", "-ap", password],
        timeout=5,
    )

    for result in (wrong, disabled, unknown, borrowed):
        assert result.returncode == 0, output(result) + registrar.tail()  # 401, then 403
    assert database.locations() == []


def test_given_a_too_brief_interval_then_423_and_an_expires_0_removes_the_binding(
    database, start_registrar
):
    password = database.seat("1001")
    registrar = start_registrar([f"{HOST}:{free_udp_port()}"])
    phone = free_udp_port()

    brief = register(
        registrar, "1001", password, phone, scenario="uac_register_brief.xml", expires=10
    )
    assert brief.returncode == 0, output(brief) + registrar.tail()  # 423, Min-Expires: 60
    assert database.locations() == []
    registered = register(registrar, "1001", password, phone)
    assert registered.returncode == 0 and len(database.locations()) == 1
    gone = register(registrar, "1001", password, phone, expires=0)

    assert gone.returncode == 0, output(gone) + registrar.tail()
    assert database.locations() == []  # written through: no row rings on


def test_given_a_new_password_then_the_old_binding_is_gone_and_the_phone_set_anew_registers(
    database, start_registrar
):
    old = database.seat("1001")
    registrar = start_registrar([f"{HOST}:{free_udp_port()}"])
    phone = free_udp_port()
    assert register(registrar, "1001", old, phone).returncode == 0
    proxied = DbSeatStore(database.factory, proxy=registrar.uri)

    with session_scope(database.factory) as session:
        new = reset_password(session=session, extension="1001", realm=REALM)

    assert database.locations() == []  # the platform no longer rings the old phone
    assert proxied.dial_target("1001", datetime.now(UTC)) is None
    stale = register(registrar, "1001", old, phone, refused=True)
    assert stale.returncode == 0, output(stale) + registrar.tail()
    # the same phone with the new password: Kamailio still held the binding in memory, and
    # its refresh finds no row to update, so it writes the row again
    renewed = register(registrar, "1001", new, phone)
    assert renewed.returncode == 0, output(renewed) + registrar.tail()
    assert [b.username for b in database.locations()] == ["1001"]
    assert proxied.dial_target("1001", datetime.now(UTC)) is not None


def test_given_five_failed_digests_from_an_address_then_it_is_refused_unheard(
    database, start_registrar
):
    password = database.seat("1001")
    registrar = start_registrar([f"{HOST}:{free_udp_port()}"])
    for _ in range(5):
        refused = register(registrar, "1001", "guess", free_udp_port(), refused=True)
        assert refused.returncode == 0, output(refused) + registrar.tail()

    # the right password from the same address now: 403 at once, no challenge
    late = register(registrar, "1001", password, free_udp_port())

    assert late.returncode != 0 and "403" in output(late), output(late)
    assert database.locations() == []
    assert "refused for 300 s" in registrar.tail()


def test_given_a_seat_registered_with_kamailio_when_an_edge_rings_it_then_the_phone_answers(
    database, start_registrar
):
    password = database.seat("1001")
    port = free_udp_port()  # the edge's, in Kamailio's dispatcher set before it starts
    registrar = start_registrar([f"{HOST}:{port}"])
    store = DbSeatStore(database.factory, proxy=registrar.uri)
    ringing = start_sip_edge(port=port, seats=store, seat_realm=REALM)
    rtp, phone = RtpPeer(), free_udp_port()
    try:
        registered = register(registrar, "1001", password, phone)
        assert registered.returncode == 0, output(registered) + registrar.tail()
        seat = start_sipp("uas_seat_via_proxy.xml", port=phone, keys={"rtp_port": rtp.port})
        target = ringing.edge.seat_target("1001")
        assert target == proxy_uri("1001", (HOST, registrar.port))

        leg = ringing.edge.dial(target, ring_timeout=5)
        leg.hangup()  # the BYE follows the route Kamailio recorded, to the phone

        out, _ = seat.communicate(timeout=20)
        assert seat.returncode == 0, out[-2500:] + registrar.tail()
        assert leg.disposition is Disposition.COMPLETED
    finally:
        rtp.close()
        ringing.edge.stop()


def test_given_a_phone_behind_nat_then_kamailio_keeps_its_mapping_open_and_rings_it_there(
    database, start_registrar
):
    password = database.seat("1001")
    port = free_udp_port()
    registrar = start_registrar([f"{HOST}:{port}"], "NATPING_INTERVAL=1")
    ringing = start_sip_edge(
        port=port, seats=DbSeatStore(database.factory, proxy=registrar.uri), seat_realm=REALM
    )
    phone = free_udp_port()
    private = "sip:1001@192.168.1.50:5060"  # what the phone believes its address is
    try:
        registered = run_sipp(
            "uac_register.xml",
            target=registrar.target,
            service="1001",
            port=phone,
            keys={"contact": f"<{private}>", "expires": 300},
            extra=["-au", "1001", "-ap", password],
            timeout=5,
        )
        assert registered.returncode == 0, output(registered) + registrar.tail()
        (binding,) = database.locations()
        assert (binding.contact, binding.received) == (private, f"sip:{HOST}:{phone}")
        with database.factory() as session:
            (seat,) = list_seats(session=session, now=datetime.now(UTC))
        assert seat.received == f"{HOST}:{phone}"  # where it is really reached

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nat:
            nat.bind((HOST, phone))  # the phone's NAT mapping: where it registered from
            nat.settimeout(0.2)
            seen: list[str] = []

            def heard(method: str) -> bool:
                with contextlib.suppress(TimeoutError):
                    seen.append(nat.recv(65535).decode(errors="replace"))
                return any(m.startswith(f"{method} ") for m in seen)

            wait_until(lambda: heard("OPTIONS"), 5, message="a keep-alive through the NAT")
            with pytest.raises(CallFailed):
                ringing.edge.dial(ringing.edge.seat_target("1001") or "", ring_timeout=1)
            wait_until(lambda: heard("INVITE"), 2, message="the INVITE through the NAT")
        invite = next(m for m in seen if m.startswith("INVITE "))
        assert invite.startswith(f"INVITE {private} SIP/2.0")
    finally:
        ringing.edge.stop()


def test_given_a_seat_not_registered_then_the_edge_does_not_ring_and_kamailio_answers_480(
    database, start_registrar
):
    database.seat("1001")
    port = free_udp_port()
    registrar = start_registrar([f"{HOST}:{port}"])
    store = DbSeatStore(database.factory, proxy=registrar.uri)
    ringing = start_sip_edge(port=port, seats=store, seat_realm=REALM)
    try:
        assert ringing.edge.seat_target("1001") is None  # the queue skips it: no INVITE

        # were it rung anyway (a binding that just expired), Kamailio says so at once
        with pytest.raises(CallFailed, match="480") as failed:
            ringing.edge.dial(proxy_uri("1001", (HOST, registrar.port)), ring_timeout=5)
        assert failed.value.disposition is Disposition.FAILED
        assert "seat 1001 is not registered" in registrar.tail()
    finally:
        ringing.edge.stop()


def test_given_an_operator_whose_phone_registered_only_with_kamailio_when_a_citizen_calls_through_it_then_bridged(  # noqa: E501
    tmp_path, database, start_registrar
):
    port = free_udp_port()
    registrar = start_registrar([f"{HOST}:{port}"])
    env = edge_env(
        tmp_path,
        rtp_ports=8,
        extra={
            "HOTLINE_DATABASE_URL": database.url,
            "HOTLINE_ACD__SEAT_PROXY": registrar.uri,
            "HOTLINE_ACD__RING_TIMEOUT_S": "5",
            "HOTLINE_TELEPHONY__PORT": str(port),
        },
    )
    password = database.seat("1001")
    with session_scope(database.factory) as session:
        operator, _ = create_user(
            session, username="li", display_name="李", role=Role.operator, now=START
        )
        session.flush()
        agents.sign_in(session, operator, "1001", "", START)
        agents.set_ready(session, saved_id(operator), START)
        operator_id = saved_id(operator)
    proc, lines = start_edge(env.env)
    caller_rtp, agent_rtp, phone = RtpPeer(), RtpPeer(), free_udp_port()
    try:
        # the probes took the edge out of rotation while it started: until one answers
        wait_until(lambda: options_status(registrar.port) == 200, 5, message="edge in rotation")
        registered = register(registrar, "1001", password, phone)
        assert registered.returncode == 0, output(registered) + registrar.tail()
        seat = start_sipp(
            "uas_seat_via_proxy.xml", port=phone, keys={"rtp_port": agent_rtp.port}, timeout=40
        )
        caller = start_sipp(
            "uac_call_via_proxy.xml",
            target=registrar.target,
            keys={"rtp_port": caller_rtp.port, "fmts": "0 101"},
            hold=10000,
            timeout=40,
        )
        try:
            out, _ = caller.communicate(timeout=40)
            assert caller.returncode == 0, out[-2500:] + "".join(lines) + registrar.tail()
            seat_out, _ = seat.communicate(timeout=20)
            assert seat.returncode == 0, seat_out[-2500:] + "".join(lines)
        finally:
            for p in (seat, caller):
                if p.poll() is None:
                    sipp_out(p)

        def record() -> CallRecord | None:
            with database.factory() as s:
                ended = select(CallRecord).where(
                    col(CallRecord.ended_at).is_not(None), col(CallRecord.queued_at).is_not(None)
                )
                return s.scalars(ended).first()  # the citizen's call, not the seat's leg

        call = wait_until(record, 15, message="the call's record ended")
        assert isinstance(call, CallRecord)
        assert call.queue_outcome is QueueOutcome.agent, "".join(lines)
        assert (call.agent_user_id, call.agent_extension, call.rings) == (operator_id, "1001", 1)
        # the edge's own registrar never saw the phone: Kamailio alone knew where it was
        assert not any("seat 1001 registered" in line for line in lines)
    finally:
        caller_rtp.close()
        agent_rtp.close()
        proc.terminate()
        proc.wait(30)


def test_given_seats_off_then_kamailio_answers_register_405_as_before(edges, start_front):
    front = start_front(edges, ping_interval=5)

    assert status_of(front.port, "REGISTER", f"sip:{front.target}") == 405
