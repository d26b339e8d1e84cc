"""bench/calls.py's platform: `hotline sip` as a child process (its CPU, memory and log
read from /proc and its log file) on a database seeded with the demo city and a Korean rule."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import _common as common
from core.db import session_scope
from dispatch import rulebook
from hotline.seed import seed_demo
from tests.telephony.sip_peers import free_udp_port

HOST = "127.0.0.1"
# `hotline sip` (python -m cli sip) with its threads named in the kernel, so their CPU can be
# read by name; HOTLINE_BENCH_PROFILE=<file> adds cProfile in every thread (bench/_profiling).
HOTLINE = [sys.executable, "-m", "bench._profiling", "sip"]
ROOT = Path(__file__).resolve().parents[1]
# A thread's kernel name (15 bytes of its Python name) -> the group its CPU is reported in.
THREAD_GROUPS = (
    ("rtp-loop", "rtp_loop"),
    ("sip-recv", "sip_recv"),
    ("sip-timers", "sip_timers"),
    ("sip-ended", "sip_ended_observer"),
    ("call-finish", "call_finishers"),
    ("call-transcript", "transcript_waiters"),
    ("call-", "call_flows"),
    ("asr-decoder", "decoder_pipes"),
    ("asr-", "live_transcribers"),
    ("cdr-partials", "partial_writer"),
    ("cdr-writer", "record_writer"),
    ("python", "main"),
)


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
        profile: Path | None = None,
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
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
                ),
                **({"HOTLINE_BENCH_PROFILE": str(profile)} if profile else {}),
                **{
                    k: v
                    for k, v in os.environ.items()
                    if k
                    in (
                        "HOTLINE_BENCH_SWITCH_INTERVAL",
                        "HOTLINE_BENCH_GC_LOG",
                        "HOTLINE_ASR__LIVE_BATCH_S",
                    )
                },
                **extra_env,
            }
        )
        self.profile = profile
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

    def wait_ready(self, timeout: float = 1200) -> None:  # 24 recognizers warm in minutes
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
        """The SIP process and its descendants (the decoder processes, and the zygote that
        forks them: asr/zygote.py), the SIP process first."""
        pids: list[int] = []
        todo = [self.proc.pid]
        while todo:
            pids.append(todo.pop(0))
            try:
                tasks = list(Path(f"/proc/{pids[-1]}/task").iterdir())
            except OSError:
                continue  # it ended meanwhile
            for task in tasks:
                try:
                    todo += [int(pid) for pid in (task / "children").read_text().split()]
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

    def threads(self) -> dict[int, tuple[str, float]]:
        """The SIP process's live threads: tid -> (kernel name, CPU seconds so far)."""
        out: dict[int, tuple[str, float]] = {}
        tick = os.sysconf("SC_CLK_TCK")
        try:
            tasks = list(Path(f"/proc/{self.proc.pid}/task").iterdir())
        except OSError:
            return out
        for task in tasks:
            try:
                stat = (task / "stat").read_text()
            except OSError:
                continue  # the thread ended meanwhile
            fields = stat.rsplit(")", 1)[1].split()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
        return out

    def thread_sampler(self, interval_s: float = 1.0) -> ThreadSampler:
        return ThreadSampler(self, interval_s)

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


class ThreadSampler:
    """Where the SIP process's CPU goes during a step, by thread group (``THREAD_GROUPS``):
    its threads read from /proc every ``interval_s`` (a call's threads end with the call, so
    one reading at the end would miss them); what threads spent after their last reading
    shows as ``unattributed`` (the process's total minus the groups)."""

    def __init__(self, platform: Platform, interval_s: float) -> None:
        self.platform = platform
        self.interval_s = interval_s
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thread-sampler", daemon=True)
        self._total0 = 0.0

    def __enter__(self) -> ThreadSampler:
        self._total0 = self.platform.cpu_split()[0]
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()
        self.total = self.platform.cpu_split()[0] - self._total0

    def _sample(self, *, first: bool = False) -> None:
        for tid, (name, cpu) in self.platform.threads().items():
            if first or tid not in self._first:
                self._first[tid] = cpu if first else 0.0
            self._last[tid] = (name, cpu)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def groups(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for tid, (name, cpu) in self._last.items():
            group = next((g for prefix, g in THREAD_GROUPS if name.startswith(prefix)), "other")
            out[group] = out.get(group, 0.0) + cpu - self._first[tid]
        out["unattributed"] = self.total - sum(out.values())
        return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


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
        if keep := os.environ.get("HOTLINE_BENCH_KEEP_LOGS"):  # a directory for the whole log
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(started.log, Path(keep) / f"sip-{started.name}.log")


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
