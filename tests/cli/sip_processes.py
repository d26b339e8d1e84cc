"""The real `hotline sip` as the tests under tests/cli start it: an environment of the test's
own (its data directory, SQLite database upgraded, SIP port and RTP ports on loopback), the
process started and waited for until it listens, and sipp's output for a failure message.
One place, so that a new setting every edge test needs is added once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlmodel import Session

from accounts import agents
from accounts.models import Role
from accounts.service import create_user
from core.db import saved_id, session_scope
from tests.conftest import wait_until
from tests.telephony.sip_peers import HOST, free_udp_port, free_udp_run, output, run_sipp

HOTLINE = Path(sys.executable).parent / "hotline"


@dataclass(frozen=True)
class EdgeEnv:
    env: dict[str, str]
    port: int  # the edge's SIP port
    media: int  # its first RTP port
    data_dir: Path

    @property
    def db_url(self) -> str:
        return f"sqlite:///{(self.data_dir / 'core.db').resolve()}"


def edge_env(tmp_path: Path, *, rtp_ports: int, extra: dict[str, str] | None = None) -> EdgeEnv:
    """The environment of a `hotline sip` of this test's own — no HOTLINE_ setting of the
    caller's shell leaks in but the secret key — with its database upgraded."""
    port, media = free_udp_port(), free_udp_run(rtp_ports)
    data_dir = tmp_path / "var"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")},
        "HOTLINE_DATA_DIR": str(data_dir),
        "HOTLINE_TELEPHONY__HOST": HOST,
        "HOTLINE_TELEPHONY__PORT": str(port),
        "HOTLINE_TELEPHONY__RTP_LOW": str(media),
        "HOTLINE_TELEPHONY__RTP_HIGH": str(media + rtp_ports),
        **(extra or {}),
    }
    if "HOTLINE_SECRET_KEY" in os.environ:
        env["HOTLINE_SECRET_KEY"] = os.environ["HOTLINE_SECRET_KEY"]
    upgraded = subprocess.run(
        [str(HOTLINE), "db", "upgrade"], env=env, capture_output=True, text=True
    )
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    return EdgeEnv(env=env, port=port, media=media, data_dir=data_dir)


def start_edge(env: dict[str, str]) -> tuple[subprocess.Popen, list[str]]:
    """`hotline sip` started and listening; its output lines as they come."""
    proc = subprocess.Popen(
        [str(HOTLINE), "sip"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    assert proc.stdout is not None
    out = proc.stdout
    threading.Thread(target=lambda: lines.extend(iter(out.readline, "")), daemon=True).start()
    wait_until(
        lambda: "SIP edge listening" in "".join(lines) or proc.poll() is not None,
        timeout=90,
        message="the SIP edge",
    )
    assert proc.poll() is None, "".join(lines)
    return proc, lines


def sipp_out(sipp) -> str:
    sipp.kill()
    return sipp.communicate(timeout=10)[0] or ""


def register_seat(edge_port: int, phone: int, password: str, lines: list[str]) -> None:
    """Seat 1001's phone (sipp on ``phone``) registers to the edge with digest auth; fails
    the test with the edge's log if it is refused."""
    registered = run_sipp(
        "uac_register.xml",
        target=f"{HOST}:{edge_port}",
        service="1001",
        port=phone,
        keys={"contact": f"<sip:1001@{HOST}:{phone}>", "expires": 300},
        extra=["-au", "1001", "-ap", password],
        timeout=5,
    )
    assert registered.returncode == 0, output(registered) + "".join(lines)


def ready_operator(factory: Callable[[], Session], now: datetime) -> int:
    """Operator 李 signed in at seat 1001 and ready; their user id."""
    with session_scope(factory) as session:
        operator, _ = create_user(
            session, username="li", display_name="李", role=Role.operator, now=now
        )
        session.flush()
        agents.sign_in(session, operator, "1001", "", now)
        agents.set_ready(session, saved_id(operator), now)
        return saved_id(operator)
