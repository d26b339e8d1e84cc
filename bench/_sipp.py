"""bench/calls.py's callers: bounded sipp runs on loopback, and what the platform recorded of
each run's calls (its call records, tickets and transcripts)."""

from __future__ import annotations

import csv
import os
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlmodel import col

from bench import _common as common
from bench._call_audio import Audio
from bench._call_platform import HOST
from telephony.models import CallRecord, TranscribedBy
from tests.telephony.sip_peers import free_udp_port, free_udp_run
from tickets.models import Ticket, TicketEvent

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


@dataclass
class SippRun:
    pid: int
    returncode: int
    wall_s: float
    answer_delays_s: list[float]
    output: str


def run_sipp(
    scenario: Path,
    *,
    target: str,
    calls: int,
    rate: int,
    hold_ms: int,
    workdir: Path,
    timeout_s: float,
) -> SippRun:
    """One bounded sipp UAC run: `calls` calls at `rate`/s, all allowed at once."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        "sipp",
        "-sf",
        str(scenario),
        "-i",
        HOST,
        "-p",
        str(free_udp_port()),
        "-mp",
        str(free_udp_run(8)),
        "-cp",
        str(free_udp_port()),
        "-m",
        str(calls),
        "-l",
        str(calls),
        "-r",
        str(rate),
        "-d",
        str(hold_ms),
        "-s",
        "12345",
        "-nostdin",
        "-timeout",
        f"{timeout_s:.0f}s",
        "-timeout_error",
        "-max_recv_loops",
        "10000",
        "-trace_rtt",
        "-rtt_freq",
        "1",
        "-trace_err",
        target,
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    # The callers' network: on a shared machine a sipp held off the CPU sends its RTP late
    # and the platform records the gap. A few % of one core (sipp_cpu_pct) at nice -5 or
    # the benchmark's own if higher; its RTP threads, started later, inherit it.
    try:
        os.setpriority(os.PRIO_PROCESS, proc.pid, min(-5, os.getpriority(os.PRIO_PROCESS, 0)))
    except OSError:  # not allowed: sipp runs at the benchmark's priority
        pass
    try:
        out, _ = proc.communicate(timeout=timeout_s + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    except BaseException:  # Ctrl-C, SIGTERM: no sipp outlives the benchmark
        proc.kill()
        proc.wait(10)
        raise
    wall = time.perf_counter() - started
    delays: list[float] = []
    for rtt in workdir.glob(f"*_{proc.pid}_rtt.csv"):
        with rtt.open() as f:
            for row in csv.DictReader(f, delimiter=";"):
                if row.get("response_time_ms"):
                    delays.append(float(row["response_time_ms"]) / 1000)
    return SippRun(proc.pid, proc.returncode, wall, delays, out[-1500:])


def speak_scenario(audio: Audio, workdir: Path) -> Path:
    """bench/scenarios/uac_speak.xml streaming this audio file (sipp expands no keywords in
    `rtp_stream`, so the path is written in)."""
    text = (SCENARIOS / "uac_speak.xml").read_text()
    path = workdir / f"uac_speak_{audio.ulaw_path.stem}.xml"
    path.write_text(text.replace('rtp_stream="AUDIO_FILE', f'rtp_stream="{audio.ulaw_path}'))
    return path


# ---------------------------------------------------------------- what the platform did


@dataclass
class CallSeen:
    call_id: str
    answered: bool
    ended: bool
    finished: bool  # the report's end was handled (end_reason written)
    ticket: bool
    ticket_status: str | None
    recording_path: str | None
    transcribed_by: str
    transcript: str | None
    transcript_lag_s: float | None  # BYE -> transcript attached
    answered_at: datetime | None
    ended_at: datetime | None


def calls_of(url: str, sipp_pid: int) -> list[CallSeen]:
    """The platform's records of one sipp run (sipp's Call-IDs are `<n>-<pid>@<ip>`)."""
    engine, factory = common.session_factory(url)
    try:
        with factory() as session:
            records = session.scalars(
                select(CallRecord).where(col(CallRecord.call_id).like(f"%-{sipp_pid}@%"))
            ).all()
            ticket_ids = [r.ticket_id for r in records if r.ticket_id is not None]
            tickets = (
                {
                    t.id: t
                    for t in session.scalars(select(Ticket).where(col(Ticket.id).in_(ticket_ids)))
                }
                if ticket_ids
                else {}
            )
            attached: dict[int, datetime] = {}
            if ticket_ids:
                for event in session.scalars(
                    select(TicketEvent).where(
                        col(TicketEvent.ticket_id).in_(ticket_ids),
                        col(TicketEvent.reason).like("call transcript%"),
                    )
                ):
                    attached.setdefault(event.ticket_id, event.at)
            out = []
            for r in records:
                ticket = tickets.get(r.ticket_id) if r.ticket_id is not None else None
                at = attached.get(r.ticket_id) if r.ticket_id is not None else None
                lag = (
                    (at - r.ended_at).total_seconds()
                    if at is not None and r.ended_at is not None
                    else None
                )
                out.append(
                    CallSeen(
                        call_id=r.call_id,
                        answered=r.answered_at is not None,
                        ended=r.ended_at is not None,
                        finished=r.end_reason is not None,
                        ticket=ticket is not None,
                        ticket_status=ticket.status.value if ticket is not None else None,
                        recording_path=r.recording_path,
                        transcribed_by=TranscribedBy(r.transcribed_by).value,
                        transcript=r.transcript,
                        transcript_lag_s=lag,
                        answered_at=r.answered_at,
                        ended_at=r.ended_at,
                    )
                )
            return out
    finally:
        engine.dispose()


def settled(url: str, sipp_pid: int, expected: int, timeout_s: float) -> list[CallSeen]:
    """Wait (bounded) until every call of the run has ended and its report was finished."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = calls_of(url, sipp_pid)
        done = len(seen) >= expected and all(
            c.ended and (c.finished or not c.answered) for c in seen
        )
        if done or time.monotonic() >= deadline:
            return seen
        time.sleep(0.5)


def outcomes(seen: Sequence[CallSeen]) -> dict[str, int]:
    """How each answered call's words reached (or will reach) its ticket."""

    def label(c: CallSeen) -> str:
        if c.transcript is None:
            return "offline_queued" if c.recording_path else "no_transcript"
        return c.transcribed_by

    return dict(Counter(label(c) for c in seen if c.answered))


def peak_concurrent(seen: Sequence[CallSeen]) -> int:
    points = []
    for c in seen:
        if c.answered_at is not None and c.ended_at is not None:
            points += [(c.answered_at, 1), (c.ended_at, -1)]
    peak = current = 0
    for _, delta in sorted(points, key=lambda p: (p[0], p[1])):
        current += delta
        peak = max(peak, current)
    return peak
