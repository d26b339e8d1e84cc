"""Seats with real phones on loopback: sipp registering with digest (its ``[authentication]``
from ``-au/-ap``), and baresip registering for real and then answering a call the edge dials
to its seat. The bindings live in memory, and in the database on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.db import make_engine, make_session_factory, session_scope
from hotline.calls.seats import DbSeatStore, create_seat, disable_seat
from hotline.tables import metadata
from telephony import sip_message as sm
from telephony.endpoint import CallFailed, CallState, Disposition
from telephony.sip_registrar import MemorySeatStore, SeatStore
from telephony.sip_registration import digest_authorization, parse_challenge
from tests.conftest import wait_until
from tests.telephony.sip_peers import (
    HOST,
    RtpPeer,
    free_udp_port,
    output,
    rms,
    run_sipp,
    start_edge,
    start_sipp,
    tone,
)

REALM = "hotline12345"
MODULES = Path("/usr/lib/baresip/modules")


@pytest.fixture
def memory() -> MemorySeatStore:
    store = MemorySeatStore()
    store.add_seat("1001", "s3cret-pw", realm=REALM)
    return store


@pytest.fixture
def database(fresh_db_url: str) -> Iterator[tuple[DbSeatStore, str]]:
    """The database store with seat 1001, and its password."""
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        _, password = create_seat(
            session=session, extension="1001", realm=REALM, now=datetime.now(UTC)
        )
    yield DbSeatStore(factory), password
    engine.dispose()


def sipp_register(
    harness,
    password: str,
    *,
    scenario: str = "uac_register.xml",
    extension: str = "1001",
    expires: int = 120,
    contact: str | None = None,
    port: int | None = None,
    trace: Path | None = None,
) -> subprocess.CompletedProcess:
    port = port or free_udp_port()
    return run_sipp(
        scenario,
        target=harness.target,
        service=extension,
        port=port,
        keys={"contact": contact or f"<sip:{extension}@{HOST}:{port}>", "expires": expires},
        extra=["-au", extension, "-ap", password],
        trace=trace,
        timeout=5,
    )


def test_given_seat_when_sipp_registers_with_digest_then_bound_and_granted(memory, tmp_path):
    harness = start_edge(seats=memory)
    try:
        port = free_udp_port()
        trace = tmp_path / "register.log"
        result = sipp_register(harness, "s3cret-pw", port=port, trace=trace)
        assert result.returncode == 0, output(result)
        assert f"<sip:1001@{HOST}:{port}>;expires=120" in trace.read_text()
        assert harness.edge.seat_target("1001") == f"sip:1001@{HOST}:{port}"
    finally:
        harness.edge.stop()


def test_given_wrong_password_or_unknown_seat_when_sipp_registers_then_403(memory):
    harness = start_edge(seats=memory)
    try:
        wrong = sipp_register(harness, "guess", scenario="uac_register_refused.xml")
        unknown = sipp_register(
            harness, "guess", scenario="uac_register_refused.xml", extension="1999"
        )
        assert wrong.returncode == 0, output(wrong)
        assert unknown.returncode == 0, output(unknown)
        assert harness.edge.seat_target("1001") is None
    finally:
        harness.edge.stop()


def test_given_too_short_expiry_when_sipp_registers_then_423_with_min_expires(memory, tmp_path):
    harness = start_edge(seats=memory, register_min_expires=60)
    try:
        trace = tmp_path / "brief.log"
        result = sipp_register(
            harness, "s3cret-pw", scenario="uac_register_brief.xml", expires=10, trace=trace
        )
        assert result.returncode == 0, output(result)
        assert "Min-Expires: 60" in trace.read_text()
        assert harness.edge.seat_target("1001") is None
    finally:
        harness.edge.stop()


def test_given_registered_seat_when_sipp_unregisters_with_expires_zero_or_star_then_gone(memory):
    harness = start_edge(seats=memory)
    try:
        port = free_udp_port()
        assert sipp_register(harness, "s3cret-pw", port=port).returncode == 0
        assert harness.edge.seat_target("1001")
        result = sipp_register(harness, "s3cret-pw", port=port, expires=0)
        assert result.returncode == 0, output(result)
        assert harness.edge.seat_target("1001") is None

        assert sipp_register(harness, "s3cret-pw", port=port).returncode == 0
        result = sipp_register(harness, "s3cret-pw", contact="*", expires=0)
        assert result.returncode == 0, output(result)
        assert harness.edge.seat_target("1001") is None
    finally:
        harness.edge.stop()


def test_given_repeated_wrong_passwords_then_source_locked_out_and_the_right_one_refused(memory):
    harness = start_edge(seats=memory)
    try:
        for _ in range(5):
            result = sipp_register(harness, "guess", scenario="uac_register_refused.xml")
            assert result.returncode == 0, output(result)
        # Locked out: 403 at once, so the scenario (waiting for a 401) fails.
        locked = sipp_register(harness, "s3cret-pw")
        assert locked.returncode != 0
        assert harness.edge.registrar is not None and harness.edge.registrar.rejected >= 6
        assert harness.edge.seat_target("1001") is None
    finally:
        harness.edge.stop()


def test_given_edge_without_seats_then_register_gets_405_with_allow(tmp_path):
    harness = start_edge()
    try:
        trace = tmp_path / "405.log"
        result = sipp_register(harness, "pw", scenario="uac_register.xml", trace=trace)
        assert result.returncode != 0  # no 401: the edge is no registrar
        text = trace.read_text()
        assert "SIP/2.0 405 Method Not Allowed" in text
        assert "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, REFER\r\n" in text.replace("\n", "\r\n")
        assert harness.edge.seat_target("1001") is None
    finally:
        harness.edge.stop()


def test_given_phone_behind_nat_when_dialled_then_its_received_address_rings(memory):
    """The Contact names a private address nobody can reach; the REGISTER came from the
    NAT's public mapping (here: sipp's loopback port), where the call must go."""
    harness = start_edge(seats=memory)
    rtp = RtpPeer()
    try:
        port = free_udp_port()
        result = sipp_register(harness, "s3cret-pw", port=port, contact="<sip:1001@10.9.8.7:5060>")
        assert result.returncode == 0, output(result)
        target = harness.edge.seat_target("1001")
        assert target == f"sip:1001@10.9.8.7:5060;alias={HOST}~{port}~1"

        callee = start_sipp("uas_answer.xml", port=port, keys={"rtp_port": rtp.port})
        call = harness.edge.dial(target, ring_timeout=5)
        assert call.state == CallState.ANSWERED and call.remote_uri == "sip:1001@10.9.8.7:5060"
        call.hangup()
        out, _ = callee.communicate(timeout=15)
        assert callee.returncode == 0, out[-2500:]
    finally:
        rtp.close()
        harness.edge.stop()


# --- the database store (SQLite and PostgreSQL) ------------------------------------------


def test_given_db_seat_when_sipp_registers_then_binding_stored_and_disable_ends_it(database):
    store, password = database
    harness = start_edge(seats=store)
    try:
        port = free_udp_port()
        result = sipp_register(harness, password, port=port)
        assert result.returncode == 0, output(result)
        [binding] = store.bindings("1001", datetime.now(UTC))
        assert binding.received == (HOST, port) and binding.user_agent == "sipp seat"

        again = sipp_register(harness, password, port=port)  # a refresh: still one row
        assert again.returncode == 0, output(again)
        assert len(store.bindings("1001", datetime.now(UTC))) == 1

        with session_scope(store._session_factory) as session:
            disable_seat(session=session, extension="1001")
        assert harness.edge.seat_target("1001") is None
        refused = sipp_register(harness, password, scenario="uac_register_refused.xml")
        assert refused.returncode == 0, output(refused)
    finally:
        harness.edge.stop()


def _baresip(tmp_path: Path, edge_port: int, password: str) -> subprocess.Popen:
    """baresip registering seat 1001 and answering every call at once with a 1 kHz tone."""
    source = tmp_path / "tone.wav"
    with wave.open(str(source), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(tone(1000, 4.0))
    rtp = free_udp_port()
    (tmp_path / "config").write_text(
        "poll_method poll\n"
        f"sip_listen {HOST}:{free_udp_port()}\n"
        f"audio_source aufile,{source}\n"
        f"audio_player aufile,{tmp_path / 'heard.wav'}\n"
        f"module_path {MODULES}\n"
        "module g711.so\nmodule aufile.so\nmodule menu.so\nmodule_app account.so\n"
        f"rtp_ports {rtp}-{rtp + 1}\n"
    )
    (tmp_path / "accounts").write_text(
        f"<sip:1001@{HOST}:{edge_port}>;auth_pass={password};regint=300;"
        "answermode=auto;audio_codecs=PCMU,PCMA\n"
    )
    return subprocess.Popen(
        ["baresip", "-f", str(tmp_path), "-t", "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def _ring_baresip(store: SeatStore, password: str, tmp_path: Path) -> None:
    harness = start_edge(seats=store, rtp_latch=True)
    phone = _baresip(tmp_path, harness.edge.address[1], password)
    try:
        target = wait_until(lambda: harness.edge.seat_target("1001"), 5, message="registered")
        assert isinstance(target, str)
        [binding] = store.bindings("1001", datetime.now(UTC))
        assert binding.user_agent.startswith("baresip")
        call = harness.edge.dial(target, ring_timeout=5)
        assert call.state == CallState.ANSWERED
        frames = [call.read_frame(1.0) for _ in range(50)]
        heard = b"".join(f for f in frames if f)
        assert rms(heard[len(heard) // 2 :]) > 2000  # baresip's tone, over a second of it
        call.hangup()
        wait_until(lambda: harness.ended, 5, message="the call's end")
        assert harness.ended[0].disposition == Disposition.COMPLETED
    finally:
        phone.terminate()
        out, _ = phone.communicate(timeout=10)
        harness.edge.stop()


def test_given_baresip_registered_to_a_memory_seat_when_the_edge_dials_it_then_answered(
    memory, tmp_path
):
    _ring_baresip(memory, "s3cret-pw", tmp_path)


def test_given_baresip_registered_to_a_db_seat_when_the_edge_dials_it_then_answered(
    database, tmp_path
):
    store, password = database
    _ring_baresip(store, password, tmp_path)


# --- on the wire without sipp: SHA-256 (sipp 3.6 knows only MD5), retransmissions ----------


class Phone:
    """A bare UDP SIP client: sends a REGISTER, returns the first response."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(3)
        self.port = self.sock.getsockname()[1]

    def register(self, edge: tuple[str, int], *, branch: str, cseq: int, auth: str = "") -> str:
        headers = [
            ("Via", f"SIP/2.0/UDP {HOST}:{self.port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:1001@{HOST}>;tag=ph1"),
            ("To", f"<sip:1001@{HOST}>"),
            ("Call-ID", f"wire-{self.port}@{HOST}"),
            ("CSeq", f"{cseq} REGISTER"),
            ("Contact", f"<sip:1001@{HOST}:{self.port}>"),
            ("Expires", "120"),
        ]
        if auth:
            headers.append(("Authorization", auth))
        self.sock.sendto(sm.build_request("REGISTER", f"sip:{HOST}", headers), edge)
        return self.sock.recv(65535).decode()

    def close(self) -> None:
        self.sock.close()


def _sha256_answer(text: str, password: str) -> str:
    values = re.findall(r"WWW-Authenticate: (.*)", text)
    challenge = next(parse_challenge(v) for v in values if "SHA-256" in v)

    def h(value: str) -> str:
        return hashlib.sha256(value.encode()).hexdigest()

    ha1 = h(f"1001:{challenge['realm']}:{password}")
    ha2 = h(f"REGISTER:sip:{HOST}")
    response = h(f"{ha1}:{challenge['nonce']}:00000001:c0ffee:auth:{ha2}")
    return (
        f'Digest username="1001", realm="{challenge["realm"]}", nonce="{challenge["nonce"]}", '
        f'uri="sip:{HOST}", response="{response}", algorithm=SHA-256, qop=auth, '
        'nc=00000001, cnonce="c0ffee"'
    )


def test_given_sha256_offered_when_a_phone_answers_with_sha256_then_registered(memory):
    harness = start_edge(seats=memory, digest_algorithms=("SHA-256", "MD5"))
    phone = Phone()
    try:
        challenge = phone.register(harness.edge.address, branch="z9hG4bKw1", cseq=1)
        assert challenge.startswith("SIP/2.0 401")
        assert challenge.index("algorithm=SHA-256") < challenge.index("algorithm=MD5")

        answer = phone.register(
            harness.edge.address,
            branch="z9hG4bKw2",
            cseq=2,
            auth=_sha256_answer(challenge, "s3cret-pw"),
        )

        assert answer.startswith("SIP/2.0 200 OK"), answer
        assert f"Contact: <sip:1001@{HOST}:{phone.port}>;expires=120" in answer
        assert harness.edge.seat_target("1001") == f"sip:1001@{HOST}:{phone.port}"
    finally:
        phone.close()
        harness.edge.stop()


def test_given_a_retransmitted_register_then_the_same_answer_again(memory):
    harness = start_edge(seats=memory)
    phone = Phone()
    try:
        first = phone.register(harness.edge.address, branch="z9hG4bKr1", cseq=1)
        again = phone.register(harness.edge.address, branch="z9hG4bKr1", cseq=1)

        assert first.startswith("SIP/2.0 401") and again == first  # same nonce, same To tag
        fresh = phone.register(harness.edge.address, branch="z9hG4bKr2", cseq=2)
        assert fresh != first
    finally:
        phone.close()
        harness.edge.stop()


class BrokenStore(MemorySeatStore):
    """The database gone away while phones register."""

    def save_binding(self, binding) -> None:
        raise ConnectionError("database unreachable")


def test_given_the_store_failing_then_500_with_retry_after_and_the_edge_goes_on(caplog):
    store = BrokenStore()
    store.add_seat("1001", "s3cret-pw", realm=REALM)
    harness = start_edge(seats=store)
    phone = Phone()
    try:
        challenge = phone.register(harness.edge.address, branch="z9hG4bKb1", cseq=1)
        values = re.findall(r"WWW-Authenticate: (.*)", challenge)
        answer = phone.register(
            harness.edge.address,
            branch="z9hG4bKb2",
            cseq=2,
            auth=digest_authorization(
                method="REGISTER",
                uri=f"sip:{HOST}",
                username="1001",
                password="s3cret-pw",
                challenge=parse_challenge(values[0]),
                cnonce="abc123",
            ),
        )

        assert answer.startswith("SIP/2.0 500 Server Internal Error")
        assert "Retry-After: 5" in answer
        assert "database unreachable" in caplog.text
        again = phone.register(harness.edge.address, branch="z9hG4bKb3", cseq=3)
        assert again.startswith("SIP/2.0 401")  # the registrar's thread lives on
    finally:
        phone.close()
        harness.edge.stop()


class HeldStore(MemorySeatStore):
    """A store whose credentials wait until the test lets them go (a slow database)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.asked = 0

    def credentials(self, extension: str):
        self.asked += 1
        self.release.wait(5)
        return super().credentials(extension)


def test_given_a_register_waiting_for_the_store_then_its_retransmission_is_not_served_twice():
    store = HeldStore()
    store.add_seat("1001", "s3cret-pw", realm=REALM)
    harness = start_edge(seats=store)
    phone = Phone()
    try:
        challenge = phone.register(harness.edge.address, branch="z9hG4bKh1", cseq=1)
        values = re.findall(r"WWW-Authenticate: (.*)", challenge)
        auth = digest_authorization(
            method="REGISTER",
            uri=f"sip:{HOST}",
            username="1001",
            password="s3cret-pw",
            challenge=parse_challenge(values[0]),
            cnonce="abc123",
        )
        phone.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):  # held by the store
            phone.register(harness.edge.address, branch="z9hG4bKh2", cseq=2, auth=auth)
        with pytest.raises(TimeoutError):  # the retransmission: absorbed, not queued again
            phone.register(harness.edge.address, branch="z9hG4bKh2", cseq=2, auth=auth)
        store.release.set()
        phone.sock.settimeout(3)
        answer = phone.sock.recv(65535).decode()

        assert answer.startswith("SIP/2.0 200 OK"), answer
        assert store.asked == 1
        phone.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            phone.sock.recv(65535)  # one answer only
        late = phone.register(harness.edge.address, branch="z9hG4bKh2", cseq=2, auth=auth)
        assert late == answer  # a later retransmission: the same answer again
    finally:
        phone.close()
        harness.edge.stop()


def test_given_a_ringing_seat_when_the_dial_is_cancelled_then_cancel_sent_at_once(memory):
    """The queued caller hung up while the agent's seat rang: the ringing stops now, not at
    the ring timeout (what the ACD's ringer asks of ``dial``)."""
    harness = start_edge(seats=memory)
    try:
        port = free_udp_port()
        assert sipp_register(harness, "s3cret-pw", port=port).returncode == 0
        target = harness.edge.seat_target("1001")
        assert target is not None
        callee = start_sipp("uas_no_answer.xml", port=port)
        cancel = threading.Event()
        timer = threading.Timer(0.3, cancel.set)
        timer.start()
        started = time.monotonic()
        with pytest.raises(CallFailed) as failure:
            harness.edge.dial(target, ring_timeout=10, cancel=cancel)
        assert failure.value.disposition == Disposition.CANCELLED
        assert time.monotonic() - started < 2  # the CANCEL's 487, not the 10 s timeout
        out, _ = callee.communicate(timeout=15)
        assert callee.returncode == 0, out[-2500:]  # it got our CANCEL and our ACK of its 487
        wait_until(lambda: harness.ended, 5, message="the call's end")
        assert harness.ended[0].disposition == Disposition.CANCELLED
    finally:
        harness.edge.stop()
