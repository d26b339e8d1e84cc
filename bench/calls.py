"""How many phone calls does one SIP process carry, and how much live speech recognition?

sipp places real calls on loopback to `hotline sip` running as a child process (the
production composition: SipEdge + the platform's FlowHooks, a fresh database, demo data and
a Korean rule); sipp's own RTP (`rtp_stream`) speaks espeak-ng Korean in G.711 μ-law after
the greeting and hangs up. Five figures, each against its target from the issue:

  max_concurrent_good      the most concurrent calls (stepped) in one process with every
                           call's recording matching what was sent (best-lag normalised
                           cross-correlation > 0.99) and no answered call without its
                           ticket; the platform's default live-ASR limit    target >= 50
  live_asr_capacity_ratio  concurrent calls the platform transcribes live within the lag
                           bound (BYE -> transcript attached <= live_lag_s) / real-time
                           streams raw Vosk decodes within the same bound, same cores,
                           same audio, same run, both warmed alike on other speech and
                           stepped alike (4, 8, 12, then by 2)              target >= 0.8
  setup_cps_ok             the highest stepped sipp call rate (INVITE, 200, ACK, a 1 s
                           call, BYE) with every call successful           target >= 20/s
  answer_delay_ms_p50      INVITE sent -> 200 received (sipp rtd) at 20 calls/s, the
                           target rate (the highest passing rate below it if it failed)
                                                                      target <= 100 ms
  transcript_lag_ms_p95    BYE received -> live transcript attached to the ticket (the
                           ticket event's time), calls within live capacity
                                                                     target <= 2000 ms

    python bench/calls.py            # readable figures (~25 minutes on 2 cores)
    python bench/calls.py --json     # one JSON object on stdout
    python bench/calls.py --quick    # fewer, shorter steps (~3 minutes)
    python bench/calls.py --sqlite   # the embedded default's SQLite instead of PostgreSQL
    python bench/calls.py --part asr # only the live-ASR comparison (~15 minutes)

Progress goes to stderr. Only loopback is used; every step is bounded (calls, sipp
timeouts, waits) and the child processes and temp files go away on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# tests.speech (espeak-ng speech, G.711) and tests.services (PostgreSQL) are not installed.
sys.path.insert(0, str(ROOT))

import numpy as np
from sqlalchemy import select

from bench import _common as common
from bench.asr import SENTENCES, new_recognizer
from core.db import session_scope
from dispatch import rulebook
from hotline.calls.setup import decode_threads as platform_decode_threads
from hotline.seed import seed_demo
from telephony.models import CallRecord, TranscribedBy
from telephony.prompts import BEEP, PromptSet
from tests.speech import deterministic_vosk_model, read_wav, speak, ulaw, ulaw_to_pcm
from tests.telephony.sip_peers import free_udp_port, free_udp_run
from tickets.models import Status, Ticket, TicketEvent

HOST = "127.0.0.1"
RATE = 8000
FRAME = 320  # 20 ms of 16-bit PCM
# What the platform (HOTLINE_ASR__WARMUP_AUDIO) warms its recognizers on when the ASR steps
# do not run (when they do, both sides warm on a caller's line: run()).
WARMUP_SENTENCES = [
    "서울시 강남구에 사는 주민입니다",
    "쓰레기 수거가 일주일째 안 되고 있어요",
    "불법 주차 차량 때문에 소방차가 못 들어옵니다",
]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
HOTLINE = [sys.executable, "-m", "cli", "sip"]
GOOD_CORRELATION = 0.99
LAG_BOUND_S = 2.0  # AsrSettings.live_lag_s, the platform's own bound for a live transcript
SETUP_HOLD_MS = 1000
PARTS = frozenset({"calls", "asr"})  # calls: concurrency and setup; asr: live ASR vs raw Vosk
TARGETS = {
    "max_concurrent_good": (">=", 50),
    "live_asr_capacity_ratio": (">=", 0.8),
    "setup_cps_ok": (">=", 20),
    "answer_delay_ms_p50": ("<=", 100),
    "transcript_lag_ms_p95": ("<=", 2000),
}


@dataclass(frozen=True)
class Plan:
    concurrency: tuple[int, ...]  # calls at once, stepped up until a step is not good
    ramp_cps: int  # how fast sipp places a concurrency step's calls
    concurrency_sentences: int  # what each caller says there (bench/asr.py's, in turn)
    setup_rates: tuple[int, ...]  # calls/s, stepped up until one call fails
    setup_seconds: int  # calls placed per rate step: rate x this
    asr_streams: tuple[int, ...]  # live-ASR steps (platform and raw Vosk alike)
    asr_sentences: int  # a stream that falls behind shows more on longer speech
    asr_start_spread_s: float  # the calls of an ASR step start within this


FULL = Plan(
    concurrency=(10, 25, 50, 75, 100, 150, 200),
    ramp_cps=20,
    concurrency_sentences=2,
    setup_rates=(10, 20, 30, 40, 60, 80),
    setup_seconds=6,
    asr_streams=(4, 8, 12, 14, 16, 18, 20, 22, 24, 28, 32),
    asr_sentences=8,
    asr_start_spread_s=1.0,
)
# Every call waits out the platform's greeting (~10 s), which sets the floor of a step.
QUICK = Plan(
    concurrency=(10, 50),
    ramp_cps=20,
    concurrency_sentences=1,
    setup_rates=(10, 20, 40),
    setup_seconds=3,
    asr_streams=(4, 8, 12, 16),
    asr_sentences=2,
    asr_start_spread_s=1.0,
)


# ---------------------------------------------------------------- small helpers


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def quantiles_ms(values_s: Sequence[float]) -> dict[str, Any] | None:
    return common.summary_ms(values_s) if values_s else None


# ---------------------------------------------------------------- audio


@dataclass(frozen=True)
class Audio:
    """What a caller sends: silence over the greeting and beep, then speech, then a breath;
    `pcm` is exactly what the platform decodes from the μ-law file sipp streams."""

    ulaw_path: Path
    pcm: bytes
    speech_pcm: bytes  # the speech alone, after G.711 (what live ASR hears)
    lead_s: float

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / RATE


def speech(sentences: int) -> bytes:
    pause = bytes(int(0.4 * RATE) * 2)  # shorter than the endpointer's 1.8 s hangover
    parts = [read_wav(speak(SENTENCES[i % len(SENTENCES)], rate=RATE))[0] for i in range(sentences)]
    return pause.join(parts)


def warmup_audio(workdir: Path, pcm: bytes | None = None) -> tuple[Path, bytes]:
    """What both sides warm their recognizers on: `pcm` (for the ASR steps what a caller's
    line carries after the greeting) or other Korean speech. A recognizer decodes speech it
    has not met about twice as slowly as speech it has (its share of the lookahead graph is
    composed lazily), so with other speech the first ASR step of a run cost about twice
    what the same step cost later (raw Vosk: 8 streams took 63.7 s of CPU as the first step,
    35.8 s after smaller ones), and which step came first decided the figures. Warmed on
    the callers' line every recognizer is in the steady state of a long-running edge whose
    pool has met its callers' vocabulary."""
    pause = bytes(int(0.4 * RATE) * 2)
    pcm = (
        pcm
        if pcm is not None
        else pause.join(read_wav(speak(text, rate=RATE))[0] for text in WARMUP_SENTENCES)
    )
    path = workdir / "warmup.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return path, pcm


def warm(recognizer: Any, pcm: bytes) -> None:
    """As VoskRecognizer.warm does: 20 ms frames, a partial read after each, the final."""
    for i in range(0, len(pcm), FRAME):
        if not recognizer.AcceptWaveform(pcm[i : i + FRAME]):
            recognizer.PartialResult()
    recognizer.FinalResult()


def caller_audio(workdir: Path, name: str, *, lead_s: float, sentences: int) -> Audio:
    raw = speech(sentences)
    silence_lead = bytes(int(lead_s * RATE) * 2)
    tail = bytes(int(0.3 * RATE) * 2)
    encoded = ulaw(silence_lead + raw + tail)
    path = workdir / f"{name}.ulaw"
    path.write_bytes(encoded)
    return Audio(path, ulaw_to_pcm(encoded), ulaw_to_pcm(ulaw(raw)), lead_s)


def correlation(sent: np.ndarray, recorded: np.ndarray) -> float:
    """Best-lag normalised cross-correlation: the recording is a stretch of what was sent
    (the platform records from the end of its greeting to the BYE). Energy of the recording
    outside the aligned stretch counts against it."""
    if recorded.size == 0 or not np.any(recorded) or not np.any(sent):
        return 0.0
    size = 1 << (sent.size + recorded.size).bit_length()
    spectrum = np.fft.rfft(sent, size) * np.conj(np.fft.rfft(recorded, size))
    xc = np.fft.irfft(spectrum, size)
    # xc[k] = sum_i sent[i + k] * recorded[i]; negative lags wrap to the end
    lags = np.concatenate([np.arange(0, sent.size), np.arange(-recorded.size + 1, 0)])
    values = np.concatenate([xc[: sent.size], xc[size - recorded.size + 1 :]])
    lag = int(lags[int(np.argmax(values))])
    if lag >= 0:
        s = sent[lag : lag + recorded.size]
        r = recorded[: s.size]
    else:
        r = recorded[-lag:]
        s = sent[: r.size]
        r = r[: s.size]
    denominator = float(np.sqrt(np.dot(s, s) * np.dot(recorded, recorded)))
    return float(np.dot(s, r)) / denominator if denominator else 0.0


def wav_samples(path: str | None) -> np.ndarray:
    if not path or not Path(path).is_file():
        return np.zeros(0)
    with wave.open(path, "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


# ---------------------------------------------------------------- the platform


class Platform:
    """`hotline sip` as a child process in a session of its own (Ctrl-C reaches us, and we
    stop it)."""

    def __init__(
        self,
        *,
        name: str,
        url: str,
        workdir: Path,
        prompts_dir: Path,
        model: Path,
        extra_env: dict[str, str],
        warmed: bool = False,
    ) -> None:
        self.name = name
        self.warmed = warmed  # ready once its ASR warm-up is done, not when it listens
        self.port = free_udp_port()
        self.data_dir = workdir / f"{name}-var"
        self.log = workdir / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
        env.update(
            {
                "HOTLINE_ENVIRONMENT": "development",
                "HOTLINE_DATA_DIR": str(self.data_dir),
                "HOTLINE_DATABASE_URL": url,
                "HOTLINE_TELEPHONY__HOST": HOST,
                "HOTLINE_TELEPHONY__PORT": str(self.port),
                "HOTLINE_TELEPHONY__RTP_LOW": "40000",
                "HOTLINE_TELEPHONY__RTP_HIGH": "49999",
                "HOTLINE_TELEPHONY__PROMPTS_DIR": str(prompts_dir),
                "HOTLINE_ASR__MODEL_PATH": str(model),
                **extra_env,
            }
        )
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                HOTLINE,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                start_new_session=True,
            )

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hotline sip exited: {self.log.read_text()[-2000:]}")
            text = self.log.read_text()
            if "ASR warm-up skipped" in text:
                raise RuntimeError(f"hotline sip did not warm up: {text[-2000:]}")
            if ("ASR warm-up:" if self.warmed else "SIP edge listening") in text:
                return
            time.sleep(0.2)
        raise RuntimeError(f"hotline sip did not listen within {timeout:.0f}s")

    def pids(self) -> list[int]:
        """The SIP process and its children (the decoder processes)."""
        pids = [self.proc.pid]
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                pids += [int(pid) for pid in (task / "children").read_text().split()]
            except OSError:
                continue  # the thread ended meanwhile
        return pids

    def cpu(self) -> float:
        """CPU seconds of the SIP process and its decoder processes so far."""
        return sum(self.cpu_split())

    def cpu_split(self) -> tuple[float, float]:
        """CPU seconds so far of (the SIP process, its decoder processes)."""
        split = []
        for pid in self.pids():
            try:
                split.append(common.cpu_seconds(pid))
            except OSError:
                split.append(0.0)
        return split[0], sum(split[1:])

    def rss_mb(self) -> dict[str, float]:
        """Resident memory of the SIP process and of its decoder processes together."""
        sizes = []
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            sizes += [int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")]
        return {
            "sip": round(sizes[0], 1) if sizes else float("nan"),
            "decoders": round(sum(sizes[1:]), 1),
            "processes": len(sizes),
        }

    def log_lines(self) -> dict[str, Any]:
        """What the process logged at WARNING and above (its INFO lines tell each call's
        story), and tracebacks."""
        lines = self.log.read_text(errors="replace").splitlines()
        levels = (" WARNING ", " ERROR ", " CRITICAL ")
        logged = Counter(
            line.split(" ", 2)[-1][:160] for line in lines if any(level in line for level in levels)
        )
        return {
            "lines": sum(logged.values()),
            "tracebacks": sum(line.startswith("Traceback") for line in lines),
            "most_common": logged.most_common(8),
            # the RTP loop's tick times while it carried calls (telephony.rtp.MediaLoop)
            "media_loop": [
                line.split("media loop ", 1)[1] for line in lines if "media loop " in line
            ][-12:],
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


logs: dict[str, dict[str, Any]] = {}


@contextmanager
def platform(**kwargs: Any) -> Iterator[Platform]:
    started = Platform(**kwargs)
    try:
        started.wait_ready()
        yield started
    finally:
        started.stop()
        logs[started.name] = started.log_lines()


def seed(url: str, rule_words: list[str]) -> dict[str, Any]:
    """Demo city and users, plus a rule keyed on what the recogniser hears in the callers'
    Korean (espeak-ng through μ-law), routed to the water company."""
    engine, factory = common.session_factory(url)
    now = datetime.now(UTC)
    try:
        with session_scope(factory) as session:
            seed_demo(session=session, now=now)
            if rule_words:
                rulebook.create_rule(
                    session,
                    now=now,
                    data={
                        "name": "bench 누수 (ko)",
                        "priority": 1,
                        "conditions": {"text_any": rule_words},
                        "actions": {
                            "category_code": "020301",
                            "category_name": "供水",
                            "lead_unit": "WATER",
                        },
                    },
                )
            return {"rules": len(rulebook.list_rules(session)), "korean_rule_words": rule_words}
    finally:
        engine.dispose()


# ---------------------------------------------------------------- sipp


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
                select(CallRecord).where(CallRecord.call_id.like(f"%-{sipp_pid}@%"))
            ).all()
            ticket_ids = [r.ticket_id for r in records if r.ticket_id is not None]
            tickets = (
                {t.id: t for t in session.scalars(select(Ticket).where(Ticket.id.in_(ticket_ids)))}
                if ticket_ids
                else {}
            )
            attached: dict[int, datetime] = {}
            if ticket_ids:
                for event in session.scalars(
                    select(TicketEvent).where(
                        TicketEvent.ticket_id.in_(ticket_ids),
                        TicketEvent.reason.like("call transcript%"),
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


# ---------------------------------------------------------------- the steps


def concurrency_step(
    p: Platform, url: str, audio: Audio, scenario: Path, calls: int, plan: Plan, workdir: Path
) -> dict[str, Any]:
    hold_ms = int(audio.seconds * 1000) + 100
    timeout = calls / plan.ramp_cps + audio.seconds + 30
    cpu0, t0 = p.cpu(), time.perf_counter()
    run = run_sipp(
        scenario,
        target=p.target,
        calls=calls,
        rate=plan.ramp_cps,
        hold_ms=hold_ms,
        workdir=workdir / f"conc-{calls}",
        timeout_s=timeout,
    )
    cpu, wall = p.cpu() - cpu0, time.perf_counter() - t0  # while sipp ran
    seen = settled(url, run.pid, calls, timeout_s=60)
    sent = np.frombuffer(audio.pcm, dtype="<i2").astype(np.float64)
    correlations = [correlation(sent, wav_samples(c.recording_path)) for c in seen if c.answered]
    answered = sum(c.answered for c in seen)
    lost = sum(c.answered and not c.ticket for c in seen)
    bad = sum(x <= GOOD_CORRELATION for x in correlations)
    good = (
        run.returncode == 0
        and len(seen) == calls
        and answered == calls
        and lost == 0
        and len(correlations) == calls
        and bad == 0
    )
    return {
        "calls": calls,
        "good": good,
        "sipp_ok": run.returncode == 0,
        "records": len(seen),
        "answered": answered,
        "lost_tickets": lost,
        "peak_concurrent": peak_concurrent(seen),
        "correlation": {
            "min": round(min(correlations), 5) if correlations else None,
            "median": round(statistics.median(correlations), 5) if correlations else None,
            "below_0_99": bad,
        },
        "transcripts": outcomes(seen),
        "answer_delay_ms": quantiles_ms(run.answer_delays_s),
        "platform_cpu_s": round(cpu, 1),
        "platform_cpu_pct": round(100 * cpu / wall, 1),
        "sipp_wall_s": round(run.wall_s, 1),
        **({} if run.returncode == 0 else {"sipp_tail": run.output[-600:]}),
    }


def setup_step(p: Platform, url: str, rate: int, plan: Plan, workdir: Path) -> dict[str, Any]:
    calls = rate * plan.setup_seconds
    cpu0, t0 = p.cpu(), time.perf_counter()
    run = run_sipp(
        SCENARIOS / "uac_setup.xml",
        target=p.target,
        calls=calls,
        rate=rate,
        hold_ms=SETUP_HOLD_MS,
        workdir=workdir / f"setup-{rate}",
        timeout_s=plan.setup_seconds + 30,
    )
    cpu, wall = p.cpu() - cpu0, time.perf_counter() - t0  # while sipp ran
    seen = settled(url, run.pid, calls, timeout_s=60)
    lost = sum(c.answered and not c.ticket for c in seen)
    answered = sum(c.answered for c in seen)
    ok = run.returncode == 0 and answered == calls and lost == 0
    return {
        "rate": rate,
        "calls": calls,
        "ok": ok,
        "sipp_ok": run.returncode == 0,
        "answered": answered,
        "lost_tickets": lost,
        "answer_delay_ms": quantiles_ms(run.answer_delays_s),
        "answer_delays_s": run.answer_delays_s,
        "platform_cpu_pct": round(100 * cpu / wall, 1),
        "wall_s": round(wall, 1),
        **({} if run.returncode == 0 else {"sipp_tail": run.output[-600:]}),
    }


def platform_asr_step(
    p: Platform, url: str, audio: Audio, scenario: Path, streams: int, plan: Plan, workdir: Path
) -> dict[str, Any]:
    rate = max(1, round(streams / plan.asr_start_spread_s))
    hold_ms = int(audio.seconds * 1000) + 100
    (sip0, dec0), t0, machine0 = p.cpu_split(), time.perf_counter(), common.machine_busy()
    sipp0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = run_sipp(
        scenario,
        target=p.target,
        calls=streams,
        rate=rate,
        hold_ms=hold_ms,
        workdir=workdir / f"asr-{streams}",
        timeout_s=audio.seconds + 40,
    )
    sipp1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine = common.machine_cpu_pct(machine0, common.machine_busy())  # while calls last
    seen = settled(url, run.pid, streams, timeout_s=60)
    (sip1, dec1), wall = p.cpu_split(), time.perf_counter() - t0  # until every transcript is in
    sip, dec = sip1 - sip0, dec1 - dec0
    cpu = sip + dec
    sipp_cpu = (sipp1.ru_utime + sipp1.ru_stime) - (sipp0.ru_utime + sipp0.ru_stime)
    lags = [
        c.transcript_lag_s
        for c in seen
        if c.transcribed_by == TranscribedBy.live.value and c.transcript_lag_s is not None
    ]
    sustained = sum(
        1
        for c in seen
        if c.transcribed_by == TranscribedBy.live.value
        and c.transcript_lag_s is not None
        and c.transcript_lag_s <= LAG_BOUND_S
    )
    return {
        "streams": streams,
        "sustained": sustained,
        "all_sustained": run.returncode == 0 and sustained == streams,
        "recordings": sorted(c.recording_path for c in seen if c.recording_path),
        "transcripts": outcomes(seen),
        "ticket_status": dict(Counter(c.ticket_status for c in seen)),
        "distinct_transcripts": Counter(
            c.transcript for c in seen if c.transcript is not None
        ).most_common(3),
        "dispatched": sum(c.ticket_status == Status.dispatched.value for c in seen),
        "lost_tickets": sum(c.answered and not c.ticket for c in seen),
        "transcript_lag_ms": quantiles_ms(lags),
        "transcript_lags_s": lags,
        "platform_cpu_pct": round(100 * cpu / wall, 1),
        "platform_cpu_s": round(cpu, 1),
        "sip_process_cpu_s": round(sip, 1),
        "decoders_cpu_s": round(dec, 1),
        "sipp_cpu_s": round(sipp_cpu, 1),
        "machine_cpu_pct": machine,
        "wall_s": round(wall, 1),
    }


def raw_asr_step(
    model: Any, recognizers: list, pcms: Sequence[bytes], streams: int, spread_s: float
) -> dict[str, Any]:
    """`streams` threads each feed an utterance (stream i: `pcms[i % len(pcms)]`) to its
    own recogniser in real time, 20 ms frames with a partial read after each, as a live
    call does; a stream is sustained when its final result comes within the lag bound of
    its audio's end — the platform's criterion too (how far behind a call's decoder fell on
    the way is not recorded there); `max_behind_ms` says how late the worst frame was
    decoded here."""
    while len(recognizers) < streams:  # as the platform's pool: fresh ones when it is short
        recognizers.append(new_recognizer(model))
    audio = [pcms[i % len(pcms)] for i in range(streams)]
    lags: list[float] = [float("inf")] * streams
    behind: list[float] = [0.0] * streams
    start = time.monotonic() + 0.2

    def work(index: int) -> None:
        rec, pcm = recognizers[index], audio[index]
        began = start + spread_s * index / streams
        worst = 0.0
        for n, i in enumerate(range(0, len(pcm), FRAME)):
            due = began + n * 0.02
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            else:
                worst = max(worst, now - due)
            if not rec.AcceptWaveform(pcm[i : i + FRAME]):
                rec.PartialResult()
        rec.FinalResult()
        lags[index] = time.monotonic() - (began + len(pcm) / 2 / RATE)
        behind[index] = worst

    longest = max(len(pcm) for pcm in audio) / 2 / RATE
    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(streams)]
    cpu0, t0, machine0 = time.process_time(), time.perf_counter(), common.machine_busy()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(longest + 120)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    machine = common.machine_cpu_pct(machine0, common.machine_busy())
    sustained = sum(lag <= LAG_BOUND_S for lag in lags)
    return {
        "streams": streams,
        "sustained": sustained,
        "all_sustained": sustained == streams,
        "distinct_audio": len({hash(pcm) for pcm in audio}),
        "audio_s": round(sum(len(pcm) for pcm in audio) / 2 / RATE / streams, 2),
        "cpu_pct": round(100 * cpu / wall, 1),
        "cpu_s": round(cpu, 1),
        "machine_cpu_pct": machine,
        "wall_s": round(wall, 1),
        "final_lag_ms": quantiles_ms([x for x in lags if x != float("inf")]),
        "max_behind_ms": ms(max(behind)),
    }


# ---------------------------------------------------------------- the run


def largest(steps: Sequence[dict[str, Any]], key: str, flag: str) -> int:
    """The largest step value reached with every step up to it passing."""
    best = 0
    for step in steps:
        if not step[flag]:
            break
        best = step[key]
    return best


def refine(steps: Sequence[dict[str, Any]], key: str, flag: str) -> int | None:
    """Between the last passing step and the first failing one, when they are more than two
    apart: the step half-way (even), so the figure's resolution is 2 streams, not 4."""
    passed = largest(steps, key, flag)
    failed = next((s[key] for s in steps if not s[flag]), None)
    if failed is None or failed - passed <= 2:
        return None
    return passed + (failed - passed) // 4 * 2


def live_asr_steps(
    p: Platform, url: str, model: Any, audio: Audio, warm_pcm: bytes, plan: Plan, workdir: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The platform and raw Vosk step by step, in the same minutes of a shared machine, on
    the same audio: each platform step first, then raw Vosk decodes that step's recordings
    (what the platform's transcribers were fed: the caller's line from the end of the
    greeting to the BYE). Both start from as many recognizers warmed on the same audio
    (`warm_pcm`, what a caller's line carries) and keep them across the steps.

    Not one utterance replayed: raw Vosk used to decode the callers' speech, the same bytes
    every stream and every step, on recognizers warmed on those very bytes. A recognizer
    composes its share of the lookahead graph lazily and keeps it, so one that decodes
    audio it has decoded before does about half the work; no live call gets that — a few
    milliseconds' difference in when the line starts being heard changes the decoder's
    path from the first frame (10 platform calls, one audio file: 3 to 4 distinct
    transcripts). Isolated, 10 streams with 0-200 ms more leading silence each cost 2.4-2.6 s
    of decoder CPU, 1.65 s with none. Beyond the platform's last step raw Vosk takes that
    step's recordings in turn, each step from the next one on, so that a recogniser
    rarely meets its own last audio again."""
    scenario = speak_scenario(audio, workdir)
    common.say(f"raw Vosk: warming {max(plan.asr_streams)} recognizers ...")
    recognizers = [new_recognizer(model) for _ in range(max(plan.asr_streams))]
    for recognizer in recognizers:
        warm(recognizer, warm_pcm)
    raw_steps: list[dict[str, Any]] = []
    asr_steps: list[dict[str, Any]] = []
    heard: list[bytes] = []  # the latest platform step's recordings

    def raw(streams: int) -> None:
        common.say(
            f"raw Vosk: {streams} real-time stream(s) on the platform's "
            f"{len(heard)} latest recordings ..."
        )
        turn = len(raw_steps)
        pcms = heard[turn % len(heard) :] + heard[: turn % len(heard)]
        step = raw_asr_step(model, recognizers, pcms, streams, plan.asr_start_spread_s)
        common.say(
            f"  sustained {step['sustained']}/{streams}, final lag "
            f"{(step['final_lag_ms'] or {}).get('p95')} ms p95, CPU {step['cpu_s']} s, "
            f"machine {step['machine_cpu_pct']} %"
        )
        raw_steps.append(step)

    def live(streams: int) -> None:
        common.say(f"platform live ASR: {streams} call(s) ...")
        step = platform_asr_step(p, url, audio, scenario, streams, plan, workdir)
        common.say(
            f"  sustained {step['sustained']}/{streams}, lag "
            f"{(step['transcript_lag_ms'] or {}).get('p95')} ms p95, CPU s: SIP "
            f"{step['sip_process_cpu_s']} decoders {step['decoders_cpu_s']} sipp "
            f"{step['sipp_cpu_s']}; machine {step['machine_cpu_pct']} %"
        )
        asr_steps.append(step)
        recorded = [read_wav(Path(path))[0] for path in step["recordings"]]
        if recorded:
            heard[:] = recorded

    for streams in plan.asr_streams:
        if not asr_steps or asr_steps[-1]["all_sustained"]:
            live(streams)
        if not heard:
            raise RuntimeError("the platform recorded none of its calls: nothing to compare")
        if not raw_steps or raw_steps[-1]["all_sustained"]:
            raw(streams)
        if not raw_steps[-1]["all_sustained"] and not asr_steps[-1]["all_sustained"]:
            break
    live_between = refine(asr_steps, "streams", "all_sustained")
    raw_between = refine(raw_steps, "streams", "all_sustained")
    if live_between:
        live(live_between)
    if raw_between:
        raw(raw_between)
    return (
        sorted(raw_steps, key=lambda s: s["streams"]),
        sorted(asr_steps, key=lambda s: s["streams"]),
    )


@contextmanager
def database(use_sqlite: bool) -> Iterator[tuple[str, str]]:
    if use_sqlite:
        with common.sqlite_database() as url:
            yield url, "sqlite"
    else:
        with common.postgres_database("hotline_bench_calls") as url:
            engine, _ = common.session_factory(url)
            try:
                version = common.postgres_version(engine)
            finally:
                engine.dispose()
            yield url, f"postgresql {version}"


def run(
    plan: Plan,
    *,
    use_sqlite: bool,
    parts: frozenset[str] = PARTS,
    decode_processes: int | None = None,
    decode_threads: int | None = None,
) -> dict[str, Any]:
    from asr.vosk_engine import load_model

    result: dict[str, Any] = {
        "machine": common.machine(),
        "quick": plan == QUICK,
        "parts": sorted(parts),
    }
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hotline-calls-")))
        cache = Path(tempfile.gettempdir()) / f"hotline-bench-calls-{os.getuid()}"
        cache.mkdir(mode=0o700, exist_ok=True)
        common.say("prompts and the deterministic Vosk model ...")
        prompts = PromptSet(cache / "prompts")
        prompts.ensure()
        greeting_s = len(prompts.compose(["greeting", BEEP])) / 2 / RATE
        model_dir = deterministic_vosk_model(cache)
        # The greeting plays after the ticket is written; under load that takes a while.
        lead_s = round(greeting_s + 1.5, 2)
        common.say("synthesising the callers' speech ...")
        conc_audio = caller_audio(
            workdir, "concurrency", lead_s=lead_s, sentences=plan.concurrency_sentences
        )
        asr_audio = caller_audio(workdir, "asr", lead_s=lead_s, sentences=plan.asr_sentences)
        # Both sides warm on what a caller's line carries after the greeting (silence,
        # the speech, the tail), the audio they then decode (live_asr_steps).
        listening = asr_audio.pcm[round(greeting_s * RATE) * 2 :]
        warm_path, warm_pcm = warmup_audio(workdir, listening if "asr" in parts else None)
        result["audio"] = {
            "greeting_and_beep_s": round(greeting_s, 2),
            "lead_silence_s": lead_s,
            "concurrency_call_s": round(conc_audio.seconds, 2),
            "asr_call_s": round(asr_audio.seconds, 2),
            "asr_speech_s": round(len(asr_audio.speech_pcm) / 2 / RATE, 2),
            "warmup_s": round(len(warm_pcm) / 2 / RATE, 2),
            "codec": "PCMU via sipp rtp_stream",
        }

        common.say("raw Vosk: loading the model ...")
        model = load_model(model_dir)
        probe = new_recognizer(model)
        probe.AcceptWaveform(asr_audio.speech_pcm)
        heard = json.loads(probe.FinalResult())["text"].split()
        rule_words = sorted({w for w in heard if len(w) >= 2 and w.isalpha()})
        del probe

        url, backend = stack.enter_context(database(use_sqlite))
        result["database"] = backend
        result["seed"] = seed(url, rule_words)

        if "calls" in parts:
            # 1. the platform as deployed (default live-ASR limit: one stream per CPU)
            max_calls = max(plan.concurrency) + 20
            common.say(f"starting hotline sip (default ASR limits, max_calls {max_calls}) ...")
            with platform(
                name="default",
                url=url,
                workdir=workdir,
                prompts_dir=cache / "prompts",
                model=model_dir,
                extra_env={"HOTLINE_TELEPHONY__MAX_CALLS": str(max_calls)},
            ) as p:
                result["platform_rss_mb_idle"] = p.rss_mb()
                scenario = speak_scenario(conc_audio, workdir)
                conc_steps = []
                for calls in plan.concurrency:
                    common.say(f"concurrency: {calls} calls at once ...")
                    step = concurrency_step(p, url, conc_audio, scenario, calls, plan, workdir)
                    common.say(
                        f"  good={step['good']} corr min {step['correlation']['min']} "
                        f"lost {step['lost_tickets']} peak {step['peak_concurrent']} "
                        f"cpu {step['platform_cpu_pct']} %"
                    )
                    conc_steps.append(step)
                    if not step["good"]:
                        break
                setup_steps = []
                for rate in plan.setup_rates:
                    common.say(f"call setup: {rate} calls/s ...")
                    step = setup_step(p, url, rate, plan, workdir)
                    common.say(
                        f"  ok={step['ok']} answer p50 "
                        f"{(step['answer_delay_ms'] or {}).get('p50')} ms"
                    )
                    setup_steps.append(step)
                    if not step["ok"]:
                        break
                result["platform_rss_mb_after"] = p.rss_mb()
            add_call_figures(result, conc_steps, setup_steps)

        if "asr" in parts:
            # 2. live ASR: the platform allowed as many live streams as the steps need.
            top = max(plan.asr_streams)
            common.say(
                f"starting hotline sip (live ASR up to {top} streams, warming {top} "
                "recognizers) ..."
            )
            with platform(
                name="asr",
                url=url,
                workdir=workdir,
                prompts_dir=cache / "prompts",
                model=model_dir,
                warmed=True,
                extra_env={
                    "HOTLINE_ASR__MAX_LIVE_STREAMS": str(top),
                    "HOTLINE_ASR__POOL_SIZE": str(top),
                    "HOTLINE_ASR__WARM_RECOGNIZERS": str(top),
                    "HOTLINE_ASR__WARMUP_AUDIO": str(warm_path),
                    **(
                        {}
                        if decode_processes is None
                        else {"HOTLINE_ASR__DECODE_PROCESSES": str(decode_processes)}
                    ),
                    **(
                        {}
                        if decode_threads is None
                        else {"HOTLINE_ASR__DECODE_THREADS": str(decode_threads)}
                    ),
                },
            ) as p:
                result["decode_processes"] = len(p.pids()) - 1
                result["decode_threads"] = platform_decode_threads(
                    decode_threads, result["decode_processes"]
                )
                raw_steps, asr_steps = live_asr_steps(
                    p, url, model, asr_audio, warm_pcm, plan, workdir
                )
            result["raw_heard"] = " ".join(heard)
            add_asr_figures(result, raw_steps, asr_steps)

    result["platform_logs"] = dict(logs)
    result["targets"] = common.verdicts(result, {k: v for k, v in TARGETS.items() if k in result})
    result["note"] = (
        "shared machine (other engineers' tests run on the same cores); sipp, "
        "the benchmark and the database share the cores with the platform"
    )
    return result


def add_call_figures(
    result: dict[str, Any], conc_steps: list[dict[str, Any]], setup_steps: list[dict[str, Any]]
) -> None:
    result["concurrency"] = {
        "steps": conc_steps,
        "ramp_cps": FULL.ramp_cps,
        "correlation_bound": GOOD_CORRELATION,
    }
    result["max_concurrent_good"] = largest(conc_steps, "calls", "good")

    setup_ok = largest(setup_steps, "rate", "ok")
    result["setup_cps_ok"] = setup_ok

    def delay_p50(rate: int) -> float | None:
        delays = next((s["answer_delays_s"] for s in setup_steps if s["rate"] == rate), [])
        return ms(statistics.median(delays)) if delays else None

    # At the rate the issue asks for (or the highest that passed, when it was not reached),
    # and at the highest rate that passed.
    target_rate = TARGETS["setup_cps_ok"][1]
    result["answer_delay_ms_p50"] = delay_p50(min(target_rate, setup_ok) or setup_steps[0]["rate"])
    result["answer_delay_rate"] = min(target_rate, setup_ok) or setup_steps[0]["rate"]
    result["answer_delay_ms_p50_at_setup_cps_ok"] = delay_p50(setup_ok)
    # sipp retransmits an unanswered INVITE and waits, so a rate can pass with seconds of
    # answer delay: the highest passing rate still answering within the target as well.
    bound = TARGETS["answer_delay_ms_p50"][1]
    result["setup_cps_answer_within_target"] = max(
        (
            s["rate"]
            for s in setup_steps
            if s["rate"] <= setup_ok and (delay_p50(s["rate"]) or 0) <= bound
        ),
        default=0,
    )
    for step in setup_steps:
        step.pop("answer_delays_s")
    result["setup"] = {"steps": setup_steps, "hold_ms": SETUP_HOLD_MS}


def add_asr_figures(
    result: dict[str, Any], raw_steps: list[dict[str, Any]], asr_steps: list[dict[str, Any]]
) -> None:
    raw_capacity = largest(raw_steps, "streams", "all_sustained")
    result["raw_vosk"] = {
        "steps": raw_steps,
        "realtime_streams": raw_capacity,
        "heard": result.pop("raw_heard"),
        "capped": bool(raw_steps[-1]["all_sustained"]),
    }
    platform_capacity = largest(asr_steps, "streams", "all_sustained")
    lags = [lag for s in asr_steps if s["all_sustained"] for lag in s["transcript_lags_s"]]
    for step in asr_steps:
        step.pop("transcript_lags_s")
    result["live_asr"] = {
        "platform_steps": asr_steps,
        "platform_streams": platform_capacity,
        "platform_capped": bool(asr_steps[-1]["all_sustained"]),
        "raw_vosk_streams": raw_capacity,
        "lag_bound_s": LAG_BOUND_S,
        "default_max_live_streams": os.cpu_count(),
    }
    result["live_asr_capacity_ratio"] = (
        round(platform_capacity / raw_capacity, 2) if raw_capacity else None
    )
    result["transcript_lag_ms_p95"] = ms(common.percentile(lags, 95)) if lags else None


def human(result: dict[str, Any]) -> str:
    m, a = result["machine"], result["audio"]
    out = [
        f"machine: {m['nproc']} x {m['cpu_model']}, Python {m['python']}; "
        f"database {result['database']}",
        f"callers: greeting+beep {a['greeting_and_beep_s']} s, then speech; concurrency "
        f"calls {a['concurrency_call_s']} s, ASR calls {a['asr_call_s']} s "
        f"({a['asr_speech_s']} s of speech; recognizers warmed on "
        f"{a['warmup_speech_s']} s of other speech)",
    ]
    if "concurrency" in result:
        out += [
            "",
            f"concurrent calls (ramp {result['concurrency']['ramp_cps']} calls/s; good = "
            f"every recording correlation > {GOOD_CORRELATION} and no lost ticket):",
        ]
        for s in result["concurrency"]["steps"]:
            delay = s["answer_delay_ms"] or {}
            out.append(
                f"  {s['calls']:4} calls  {'good' if s['good'] else 'NOT GOOD':8}  "
                f"peak {s['peak_concurrent']:3}  answered {s['answered']:3}  lost "
                f"tickets {s['lost_tickets']}  corr min {s['correlation']['min']} "
                f"(<= 0.99: {s['correlation']['below_0_99']})  answer p50 "
                f"{delay.get('p50')} ms  platform CPU {s['platform_cpu_pct']} %  "
                f"transcripts {s['transcripts']}"
            )
        out += ["", f"call setup (hold {result['setup']['hold_ms']} ms):"]
        for s in result["setup"]["steps"]:
            delay = s["answer_delay_ms"] or {}
            out.append(
                f"  {s['rate']:4} calls/s  {s['calls']:4} calls  "
                f"{'all ok' if s['ok'] else 'FAILURES':8}  answered {s['answered']}  "
                f"answer p50 {delay.get('p50')} ms p95 {delay.get('p95')} ms  "
                f"platform CPU {s['platform_cpu_pct']} %"
            )
        out.append(
            f"answer delay p50 at {result['answer_delay_rate']} calls/s: "
            f"{result['answer_delay_ms_p50']} ms; at {result['setup_cps_ok']} calls/s: "
            f"{result['answer_delay_ms_p50_at_setup_cps_ok']} ms (sipp rtd, ms "
            f"resolution); highest passing rate with p50 <= 100 ms: "
            f"{result['setup_cps_answer_within_target']} calls/s"
        )
    if "live_asr" in result:
        live = result["live_asr"]
        out += [
            "",
            f"live ASR (sustained = final transcript within {live['lag_bound_s']} s of "
            "the audio's end):",
            "  raw Vosk, threads decoding real-time audio:",
        ]
        for s in result["raw_vosk"]["steps"]:
            out.append(
                f"    {s['streams']:3} streams  sustained {s['sustained']:3}  final lag "
                f"p95 {(s['final_lag_ms'] or {}).get('p95')} ms  CPU "
                f"{s['cpu_pct']} %"
            )
        out.append("  platform, live-transcribed calls (BYE -> transcript on the ticket):")
        for s in live["platform_steps"]:
            out.append(
                f"    {s['streams']:3} calls    sustained {s['sustained']:3}  lag p95 "
                f"{(s['transcript_lag_ms'] or {}).get('p95')} ms  dispatched "
                f"{s['dispatched']}  {s['transcripts']}  CPU {s['platform_cpu_pct']} %"
            )
        capped = (
            " (a capped figure reached the top step: it is a lower bound)"
            if (live["platform_capped"] or result["raw_vosk"]["capped"])
            else ""
        )
        out.append(
            f"  platform {live['platform_streams']} / raw {live['raw_vosk_streams']} "
            f"streams{capped} (the platform's default limit is "
            f"{live['default_max_live_streams']}, one per CPU)"
        )
    for name, seen in result["platform_logs"].items():
        out.append(
            f"platform '{name}' logged {seen['lines']} warning/error line(s), "
            f"{seen['tracebacks']} traceback(s)"
            + "".join(f"\n    {n} x {text}" for text, n in seen["most_common"][:4])
        )
    out += ["", "targets:"]
    for key, v in result["targets"].items():
        verdict = {True: "met", False: "MISSED", None: "n/a"}[v["met"]]
        out.append(f"  {key:25} {v['value']!s:>8}  target {v['target']:8}  {verdict}")
    out += ["", result["note"]]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="smaller steps (~2 minutes)")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument(
        "--part",
        choices=["all", *sorted(PARTS)],
        default="all",
        help="calls: concurrency and call setup only; asr: live ASR only",
    )
    parser.add_argument(
        "--decode-processes",
        type=int,
        metavar="N",
        help="HOTLINE_ASR__DECODE_PROCESSES for the live-ASR platform "
        "(default: the platform's own; 0: threads of the SIP process)",
    )
    parser.add_argument(
        "--decode-threads",
        type=int,
        metavar="N",
        help="HOTLINE_ASR__DECODE_THREADS (decoder threads in each decoder "
        "process) for the live-ASR platform",
    )
    parser.add_argument(
        "--asr-steps",
        metavar="N,N,...",
        help="live-ASR steps instead of the plan's (e.g. 12,14,16)",
    )
    parser.add_argument(
        "--concurrency-steps",
        metavar="N,N,...",
        help="calls-at-once steps instead of the plan's (e.g. 100,150)",
    )
    parser.add_argument(
        "--setup-rates",
        metavar="N,N,...",
        help="call setup rates (calls/s) instead of the plan's (e.g. 20,80)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL

    def steps(option: str, value: str, top: int) -> tuple[int, ...]:
        try:
            numbers = tuple(sorted({int(n) for n in value.split(",")}))
        except ValueError:
            parser.error(f"{option} takes whole numbers, got {value!r}")
        if not numbers or numbers[0] < 1 or numbers[-1] > top:
            parser.error(f"{option} takes numbers from 1 to {top}")
        return numbers

    if args.asr_steps:
        plan = dataclasses.replace(plan, asr_streams=steps("--asr-steps", args.asr_steps, 64))
    if args.concurrency_steps:
        plan = dataclasses.replace(
            plan, concurrency=steps("--concurrency-steps", args.concurrency_steps, 400)
        )
    if args.setup_rates:
        plan = dataclasses.replace(plan, setup_rates=steps("--setup-rates", args.setup_rates, 200))
    # SIGTERM unwinds like Ctrl-C, so the child processes and temp files are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(
        plan,
        use_sqlite=args.sqlite,
        parts=PARTS if args.part == "all" else frozenset({args.part}),
        decode_processes=args.decode_processes,
        decode_threads=args.decode_threads,
    )
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(human(result))


if __name__ == "__main__":
    main()
