"""bench/calls.py's platform: `hotline sip` as a child process (its CPU, memory and log
read from /proc and its log file) on a database seeded with the demo city and a Korean rule."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
HOTLINE = [sys.executable, "-m", "cli", "sip"]


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
