"""`hotline run --host --port --sip-port`: the command line wins over the environment, the
addresses printed are the ones served, and the data directory printed — resolved once from
the working directory — is the one every child process uses. One real start: it is slow
(the voice prompts are synthesised on the first)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import httpx

from hotline import migrate
from tests.cli.test_config_errors import HOTLINE, clean_env, hotline
from tests.conftest import wait_until
from tests.services import free_port


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_run_listens_where_the_command_line_says_and_prints_the_data_dir(tmp_path):
    port, sip_port = free_port(), free_port()
    ignored_port, ignored_sip_port = free_port(), free_port()
    env = clean_env(
        # The environment says otherwise: the options win.
        HOTLINE_WEB__HOST="0.0.0.0",
        HOTLINE_WEB__PORT=str(ignored_port),
        HOTLINE_TELEPHONY__PORT=str(ignored_sip_port),
        HOTLINE_ASR__DECODE_PROCESSES="0",  # one model in memory is enough here
    )
    proc = subprocess.Popen(
        [
            str(HOTLINE),
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--sip-port",
            str(sip_port),
        ],
        cwd=tmp_path,  # no HOTLINE_DATA_DIR: `var` here
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a failed test kills the whole tree
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    )
    reader.start()
    try:
        wait_until(
            lambda: "SIP edge listening" in "".join(lines) or proc.poll() is not None,
            timeout=120,
            message="the SIP edge",
        )
        assert proc.poll() is None, "".join(lines)
        assert _answers(f"http://127.0.0.1:{port}/docs"), "".join(lines)
        assert not _answers(f"http://127.0.0.1:{ignored_port}/docs")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(5)
    output = "".join(lines)
    data = tmp_path / "var"
    assert f"  data:      {data}\n" in output
    assert (
        f"  browser:   http://127.0.0.1:{port}/   API docs: http://127.0.0.1:{port}/docs" in output
    )
    assert f"softphone: sip:12345@127.0.0.1:{sip_port}" in output
    assert f"SIP edge listening on 127.0.0.1:{sip_port}" in output
    assert str(ignored_port) not in output and str(ignored_sip_port) not in output
    # Every process used the printed data dir: the database, the prompts the SIP edge made.
    assert migrate.current(f"sqlite:///{data / 'core.db'}") == migrate.head()
    assert any((data / "prompts").rglob("*.wav"))
    # Another directory finds this centre through HOTLINE_DATA_DIR, and only through it.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = hotline("users", "list", cwd=elsewhere, env=clean_env(HOTLINE_DATA_DIR=str(data)))
    assert found.returncode == 0 and "admin" in found.stdout, found.stderr
    assert hotline("users", "list", cwd=elsewhere, env=clean_env()).returncode == 1
