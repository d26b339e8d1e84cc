"""bench/acd.py's platform side: operators and seats in the database, the seats' phones
registered by sipp with digest, the operators' states moved as the console moves them, sipp
runs in the background, what the call records say, and the queue's ring delay read from the
edge's log and the seats' sipp traces."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import or_, select
from sqlmodel import col

from accounts import agents
from accounts.models import AgentState, AgentStatus, NotReadyReason, Role, User
from accounts.service import create_user
from bench import _common as common
from core import bell as doorbell
from core.db import saved_id, session_scope, table_of
from hotline.calls.seats import create_seat
from telephony.models import CallRecord, QueueOutcome
from tests.telephony.sip_peers import free_udp_port, free_udp_run

HOST = "127.0.0.1"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
REALM = "hotline12345"  # AcdSettings.realm's default


@dataclass(frozen=True)
class Operator:
    user_id: int
    extension: str
    password: str


def make_operators(url: str, extensions: Sequence[str]) -> list[Operator]:
    """An operator account and a seat (digest password) per extension, not signed in yet
    (``sign_in_all``; then ``order_ready`` makes them ready)."""
    engine, factory = common.session_factory(url)
    now = datetime.now(UTC)
    out = []
    try:
        with session_scope(factory) as session:
            for ext in extensions:
                _, password = create_seat(session=session, extension=ext, realm=REALM, now=now)
                user, _ = create_user(
                    session,
                    username=f"op{ext}",
                    display_name=f"op {ext}",
                    role=Role.operator,
                    now=now,
                )
                session.flush()
                out.append(Operator(saved_id(user), ext, password))
        return out
    finally:
        engine.dispose()


def sign_in_all(url: str, bell: Any, operators: Sequence[Operator]) -> None:
    """Each operator signs in at their seat (not ready yet), as at the console."""
    engine, factory = common.session_factory(url)
    try:
        with session_scope(factory) as session:
            for o in operators:
                user = session.get(User, o.user_id)
                assert user is not None
                agents.sign_in(session, user, o.extension, "", datetime.now(UTC), bell=bell)
    finally:
        engine.dispose()


def bell_of(data_dir: Path) -> Any:
    """The platform's doorbell (no broker configured: Unix sockets under its data dir), so
    that the edge hears every move the benchmark makes as it hears the console's."""
    return doorbell.for_settings(SimpleNamespace(broker_url=None, data_dir=data_dir))


_BUSY = (AgentState.wrap_up, AgentState.ringing, AgentState.on_call)
_HELD_BY_A_CALL = (AgentState.ringing, AgentState.on_call)


@dataclass(frozen=True)
class Busy:
    """An operator a move had to leave alone: ringing or on a call (the console cannot take
    them off it either), with the call the row names."""

    user_id: int
    state: str
    call_key: str | None


def order_ready(
    url: str, bell: Any, ready: Sequence[int], off: Iterable[int] = (), *, wait_s: float = 60
) -> list[Busy]:
    """Operators ``ready`` go ready in this order — the first is the longest idle, so the
    queue offers it the next call — through not ready, as the console moves them; ``off``
    go not ready (break). Waits (bounded by ``wait_s``) for calls and wrap-ups to end first;
    an operator still ringing or on a call after that is left as they are (no console move
    is allowed from there) and returned."""
    engine, factory = common.session_factory(url)
    wanted = [*ready, *off]
    try:
        deadline = time.monotonic() + wait_s
        while True:
            with factory() as session:
                busy = session.scalar(
                    select(col(AgentStatus.user_id))
                    .where(
                        col(AgentStatus.state).in_(_BUSY),
                        col(AgentStatus.user_id).in_(wanted),
                    )
                    .limit(1)
                )
            if busy is None or time.monotonic() >= deadline:
                break
            time.sleep(0.3)
        left: list[Busy] = []
        for user_id in wanted:
            with session_scope(factory) as session:
                agent = agents.status(session, user_id, datetime.now(UTC))
                if agent.state in _HELD_BY_A_CALL:
                    left.append(Busy(user_id, agent.state.value, agent.call_key))
                    continue
                if agent.state not in (AgentState.not_ready, AgentState.signed_out):
                    agents.set_not_ready(
                        session, user_id, NotReadyReason.break_, datetime.now(UTC), bell=bell
                    )
        held = {b.user_id for b in left}
        for user_id in ready:
            if user_id in held:
                continue
            with session_scope(factory) as session:
                if (
                    agents.status(session, user_id, datetime.now(UTC)).state
                    != AgentState.signed_out
                ):
                    agents.set_ready(session, user_id, datetime.now(UTC), bell=bell)
        return left
    finally:
        engine.dispose()


def stand_down(
    url: str, bell: Any, user_ids: Sequence[int], *, wait_s: float = 45
) -> dict[str, Any]:
    """The end of a run: every operator on a break, so that nothing is offered while the
    platform stops. After a bad step calls may still be up (a caller sipp killed before its
    BYE: the platform's stop ends them) and an operator may still be shown on a call that
    has ended (a stuck state the reconciler repairs within its period): both are waited for
    (``wait_s``, past one reconcile period), left as they are, and reported — the step's
    figures are printed either way."""
    left = order_ready(url, bell, [], user_ids, wait_s=wait_s)
    keys = [b.call_key for b in left if b.call_key]
    c = table_of(CallRecord).c
    engine, factory = common.session_factory(url)
    try:
        with factory() as session:
            ended = {
                r.call_id: r.ended_at
                for r in session.execute(
                    select(c.call_id, c.ended_at).where(c.call_id.in_(keys))
                ).all()
            }
    finally:
        engine.dispose()
    # A call whose record has not ended is still up in the edge (the platform's stop hangs
    # it up); one that ended, or has no record, has left its operator stuck.
    live = [b for b in left if b.call_key in ended and ended[b.call_key] is None]
    return {
        "operators_held_by_a_call": len(left),
        "on_live_calls": len(live),
        "stuck": [
            {"user_id": b.user_id, "state": b.state, "call": b.call_key}
            for b in left
            if b not in live
        ],
    }


def sign_out_all(url: str, bell: Any, user_ids: Iterable[int]) -> None:
    engine, factory = common.session_factory(url)
    try:
        for user_id in user_ids:
            with session_scope(factory) as session:
                agents.sign_out(session, user_id, datetime.now(UTC), force=True, bell=bell)
    finally:
        engine.dispose()


# ---------------------------------------------------------------- sipp


@dataclass
class Sipp:
    proc: subprocess.Popen[bytes]
    out: Path
    started: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def finish(self, timeout_s: float) -> SippEnd:
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return sipp_end(self.proc.returncode, self.out.read_text(errors="replace"))

    def stop(self) -> SippEnd:
        """A UAS that waits for calls that will not come: SIGINT, on which sipp ends with
        its last statistics screen."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.finish(10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@dataclass(frozen=True)
class SippEnd:
    returncode: int
    created: int  # calls sipp made (a UAC) or took (a UAS)
    successful: int
    failed: int
    tail: str

    @property
    def placed(self) -> int:
        return self.created


def sipp_end(returncode: int, screen: str) -> SippEnd:
    """sipp's own count of its calls and their ends, from its last statistics screen (the
    cumulative column): a call it made ended successful or failed, or had not ended when
    sipp was stopped."""

    def last(label: str) -> int:
        found = re.findall(rf"^\s*{label}\s*\|.*?\|\s*(\d+)\s*$", screen, re.M)
        return int(found[-1]) if found else 0

    return SippEnd(
        returncode,
        last("Total Calls created"),
        last("Successful call"),
        last("Failed call"),
        screen[-1200:],
    )


def start_sipp(
    scenario: Path,
    *,
    workdir: Path,
    name: str,
    calls: int,
    target: str | None = None,
    port: int | None = None,
    rate: float = 10,
    hold_ms: int = 0,
    keys: dict[str, object] | None = None,
    inf: Path | None = None,
    media_port: int | None = None,
    timeout_s: float = 120,
    trace: bool = False,
    extra: Sequence[str] = (),
) -> Sipp:
    """One bounded sipp run in the background (a UAC with ``target``, else a UAS listening
    on ``port``), its screen to ``<name>.out``."""
    port = port or free_udp_port()
    cmd = [
        "sipp", "-sf", str(scenario), "-i", HOST, "-p", str(port),
        "-mp", str(media_port or free_udp_run(8)), "-cp", str(free_udp_port()),
        "-m", str(calls), "-l", str(calls), "-r", f"{rate:g}", "-d", str(hold_ms),
        "-s", "12345", "-nostdin", "-timeout", f"{timeout_s:.0f}s", "-timeout_error",
        "-max_recv_loops", "10000", "-trace_err",
    ]  # fmt: skip
    for key, value in (keys or {}).items():
        cmd += ["-key", key, str(value)]
    if inf is not None:
        cmd += ["-inf", str(inf)]
    if trace:
        cmd += ["-trace_msg", "-message_file", str(workdir / f"{name}.msg")]
    cmd += extra
    if target:
        cmd.append(target)
    out = workdir / f"{name}.out"
    with open(out, "wb") as screen:
        proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=screen, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    if target is None:  # a UAS: once it listens, so that no INVITE is lost
        deadline = time.monotonic() + 5
        while not _udp_taken(port) and time.monotonic() < deadline:
            time.sleep(0.02)
    return Sipp(proc, out, time.monotonic())


def _udp_taken(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
        return False


def scenario_with(workdir: Path, source: str, name: str, replace: dict[str, str]) -> Path:
    """bench/scenarios/``source`` with words written in (sipp expands no keywords in
    ``rtp_stream`` or a pause's ``mean``)."""
    text = (SCENARIOS / source).read_text()
    for old, new in replace.items():
        if old not in text:
            raise ValueError(f"{old!r} not in {source}")
        text = text.replace(old, new)
    path = workdir / name
    path.write_text(text)
    return path


@dataclass(frozen=True)
class _Registering:
    operator: Operator
    port: int
    sipp: Sipp


def register(
    target: str, operators: Sequence[Operator], ports: Sequence[int], workdir: Path
) -> SippEnd:
    """Every seat's phone registers (REGISTER, 401, REGISTER with digest, 200) from the port
    its calls will ring — ``ports[i]``, where the sipp answering that seat listens (the
    registrar rings a phone where its REGISTER came from, as behind NAT). One sipp per seat
    (its credentials are sipp's -au/-ap); seats sharing a port register one after another."""
    ends: list[SippEnd] = []
    by_port: dict[int, list[Operator]] = defaultdict(list)
    for o, port in zip(operators, ports, strict=True):
        by_port[port].append(o)
    rounds = max(len(group) for group in by_port.values())
    for i in range(rounds):
        runs = []
        for port, group in by_port.items():
            if i >= len(group):
                continue
            o = group[i]
            inf = workdir / f"seat-{port}.csv"
            inf.write_text(f"SEQUENTIAL\n{o.extension};{port}\n")
            runs.append(
                _Registering(o, port, start_sipp(
                    SCENARIOS / "acd_register.xml", workdir=workdir, name=f"register-{port}",
                    calls=1, target=target, port=port, inf=inf, timeout_s=20,
                    extra=["-au", o.extension, "-ap", o.password],
                ))
            )  # fmt: skip
        for run in runs:
            end = run.sipp.finish(40)
            if not end.successful:  # e.g. a media port taken meanwhile: once more
                o, port = run.operator, run.port
                inf = workdir / f"seat-{port}.csv"
                inf.write_text(f"SEQUENTIAL\n{o.extension};{port}\n")
                retry = start_sipp(
                    SCENARIOS / "acd_register.xml", workdir=workdir, name=f"register-{port}",
                    calls=1, target=target, port=port, inf=inf, timeout_s=20,
                    extra=["-au", o.extension, "-ap", o.password],
                )  # fmt: skip
                end = retry.finish(40)
            ends.append(end)
    ok = sum(e.successful for e in ends)
    return SippEnd(  # a sipp that never made its call (its port taken) failed too
        max(e.returncode for e in ends),
        len(operators),
        ok,
        len(operators) - ok,
        next((e.tail for e in ends if e.returncode), ""),
    )


# ---------------------------------------------------------------- what the platform recorded


@dataclass(frozen=True)
class Record:
    call_id: str
    answered_at: datetime | None
    queued_at: datetime | None
    queue_left_at: datetime | None
    outcome: str | None
    agent_extension: str | None
    agent_answered_at: datetime | None
    ended_at: datetime | None

    @property
    def wait_s(self) -> float | None:
        if self.queued_at is None or self.queue_left_at is None:
            return None
        return (self.queue_left_at - self.queued_at).total_seconds()


def records(url: str, sipp_pids: Iterable[int]) -> list[Record]:
    """The call records of these sipp runs (sipp's Call-IDs are ``<n>-<pid>@<ip>``)."""
    pids = list(sipp_pids)
    if not pids:
        return []
    c = table_of(CallRecord).c
    engine, factory = common.session_factory(url)
    try:
        with factory() as session:
            # the columns read, named: the model may meanwhile have grown one the database
            # under test has not
            rows = session.execute(
                select(
                    c.call_id,
                    c.answered_at,
                    c.queued_at,
                    c.queue_left_at,
                    c.queue_outcome,
                    c.agent_extension,
                    c.agent_answered_at,
                    c.ended_at,
                ).where(or_(*(c.call_id.like(f"%-{pid}@%") for pid in pids)))
            ).all()
            return [
                Record(
                    r.call_id,
                    _utc(r.answered_at),
                    _utc(r.queued_at),
                    _utc(r.queue_left_at),
                    QueueOutcome(r.queue_outcome).value if r.queue_outcome else None,
                    r.agent_extension,
                    _utc(r.agent_answered_at),
                    _utc(r.ended_at),
                )
                for r in rows
            ]
    finally:
        engine.dispose()


def _utc(at: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes for the stored UTC ones."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def wait_records(url: str, pids: Sequence[int], done: Any, timeout_s: float) -> list[Record]:
    """Poll (bounded) until ``done(records)``."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = records(url, pids)
        if done(seen) or time.monotonic() >= deadline:
            return seen
        time.sleep(0.5)


def call_ends(placed: int, seen: Sequence[Record]) -> dict[str, int]:
    """How every placed call ended by the records: ``lost_calls`` = placed − (answered by an
    operator + abandoned + overflowed + callback asked for + taken by the robot by design);
    a call with no record, or a record with no outcome, is lost."""
    by: dict[str, int] = defaultdict(int)
    for r in seen:
        by[r.outcome or "no_outcome"] += 1
    ended = sum(by[o.value] for o in QueueOutcome)
    return {
        "placed": placed,
        "answered": by[QueueOutcome.agent.value],
        "abandoned": by[QueueOutcome.abandoned.value],
        "overflowed": by[QueueOutcome.overflowed.value],
        "callbacks": by[QueueOutcome.callback_requested.value],
        "robot": by[QueueOutcome.robot.value],
        "records": len(seen),
        "no_outcome": by["no_outcome"],
        "lost_calls": placed - ended,
    }


# ---------------------------------------------------------------- the ring delay

# The one log format (core/logging_setup.py): ISO time with its offset, level, process,
# logger, [ids]: message.
_PICK = re.compile(
    r"^(\S+) INFO\s+\S+ telephony\.acd(?: \[[^\]]*\])?: "
    r"call (\S+) rings agent \S+ \((\d+)\)"
)
_TRACE_TIME = re.compile(r"^-{10,}\s+(\d{4}-\d\d-\d\d)\s+(\d\d:\d\d:\d\d\.\d{6})", re.M)


def ring_delays_ms(log: str, traces: Iterable[str]) -> list[float]:
    """Queue pick → the seat's phone receiving the INVITE, per ring: the pick is the edge's
    log line at the moment the engine chose the operator (ms resolution); the INVITE's
    arrival is the seat's sipp trace (µs, the same clock). Each pick is paired with the first
    INVITE to that extension at or after it (a retransmission is not a new ring)."""
    picks: dict[str, list[float]] = defaultdict(list)
    for line in log.splitlines():
        m = _PICK.match(line)
        if m:
            picks[m.group(3)].append(datetime.fromisoformat(m.group(1)).timestamp())
    invites: dict[str, list[float]] = defaultdict(list)
    for trace in traces:
        stamps = list(_TRACE_TIME.finditer(trace))
        for i, stamp in enumerate(stamps):
            end = stamps[i + 1].start() if i + 1 < len(stamps) else len(trace)
            block = trace[stamp.end() : end]
            if "message received" not in block:
                continue
            m = re.search(r"^INVITE sip:(\d+)@", block, re.M)
            if m is None:
                continue
            got = datetime.strptime(f"{stamp.group(1)} {stamp.group(2)}", "%Y-%m-%d %H:%M:%S.%f")
            invites[m.group(1)].append(got.timestamp())
    delays = []
    for ext, times in picks.items():
        arrivals = sorted(invites.get(ext, []))
        for pick in sorted(times):
            # the log's millisecond is truncated: the INVITE may show up to 1 ms "before"
            later = [a for a in arrivals if a >= pick - 0.001]
            if later:
                delays.append(max(0.0, 1000 * (later[0] - pick)))
                arrivals.remove(later[0])
    return delays


def seat_answers_ms(trace: str) -> tuple[list[float], int]:
    """The seats' phone itself (its sipp trace): INVITE received → its 200 sent, per INVITE
    (the queue's ring, and in rtpengine mode the edge's re-INVITE), in ms; and how many
    INVITEs came again (the edge's timer A fired: the phone answered late). Tells a late
    answer of the bench's own phone from a late edge."""
    received: dict[tuple[str, str], float] = {}
    answers: list[float] = []
    again = 0
    stamps = list(_TRACE_TIME.finditer(trace))
    for i, stamp in enumerate(stamps):
        end = stamps[i + 1].start() if i + 1 < len(stamps) else len(trace)
        block = trace[stamp.end() : end]
        call_id = re.search(r"^Call-ID:\s*(\S+)", block, re.M | re.I)
        cseq = re.search(r"^CSeq:\s*(\d+)\s+INVITE", block, re.M | re.I)
        if call_id is None or cseq is None:
            continue
        key = (call_id.group(1), cseq.group(1))
        at = datetime.strptime(f"{stamp.group(1)} {stamp.group(2)}", "%Y-%m-%d %H:%M:%S.%f")
        if "message received" in block and re.search(r"^INVITE ", block, re.M):
            if key in received:
                again += 1
            else:
                received[key] = at.timestamp()
        elif "message sent" in block and re.search(r"^SIP/2\.0 200", block, re.M):
            got = received.pop(key, None)
            if got is not None:
                answers.append(1000 * (at.timestamp() - got))
    return answers, again
