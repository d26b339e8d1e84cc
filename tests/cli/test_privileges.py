"""Root runs the platform as its data directory's owner (cli.privileges, scripts/setup.sh):
no process of the platform runs as root, and Celery has no root to warn about.

Changing users needs root: the suite runs as root (`./scripts/test` on a fresh machine, as
CI does); run by another user these fail at their first chown, they are not skipped. Each
change of user happens in a child process — the test process itself never gives up root."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_app import HOTLINE, _answers, _children_of
from tests.conftest import wait_until
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory other users can reach (pytest's tmp_path is under root's 0700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="hotline-priv-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _as_root_then(data_dir: Path) -> list[str]:
    """What a root process is after act_as_data_owner(data_dir): returned name, uid, gid, HOME."""
    code = (
        "import os, sys; from pathlib import Path; "
        "from cli.privileges import act_as_data_owner; "
        "name = act_as_data_owner(Path(sys.argv[1])); "
        "print(name, os.getuid(), os.getgid(), os.environ.get('HOME'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(data_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    return done.stdout.split()


def test_given_a_data_dir_an_unprivileged_user_owns_then_root_becomes_that_user(open_dir):
    data = open_dir / "var"
    data.mkdir()
    os.chown(data, NOBODY.pw_uid, NOBODY.pw_gid)

    name, uid, gid, home = _as_root_then(data)

    assert (name, int(uid), int(gid)) == ("nobody", NOBODY.pw_uid, NOBODY.pw_gid)
    assert home == str(data)  # nobody's home (/nonexistent) is not writable: the data dir


@pytest.mark.parametrize("owner", ["root", "absent", "a number no user has"])
def test_given_a_data_dir_root_owns_or_none_then_nothing_changes(open_dir, owner):
    data = open_dir / "var"
    if owner != "absent":
        data.mkdir()
    if owner == "a number no user has":
        unknown = next(uid for uid in range(54321, 60000) if not _known(uid))
        os.chown(data, unknown, unknown)

    name, uid, _gid, _home = _as_root_then(data)

    assert (name, uid) == ("None", "0")


def _known(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_given_root_runs_the_platform_on_a_users_data_then_every_process_is_that_user(
    open_dir,
):
    """`hotline run` started by root on a data directory `nobody` owns: web, worker + beat,
    SIP edge and decoders all run as nobody, whatever they write is nobody's, and neither
    Celery's SecurityWarning nor our own root warning is printed — there is no root."""
    data = open_dir / "var"
    data.mkdir()
    os.chown(data, NOBODY.pw_uid, NOBODY.pw_gid)
    port = free_port()
    environment = {n: v for n, v in os.environ.items() if not n.startswith("HOTLINE_")}
    proc = subprocess.Popen(
        [str(HOTLINE), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=open_dir,
        env={
            **environment,
            "HOTLINE_DATA_DIR": str(data),
            "HOTLINE_WEB__HOST": "127.0.0.1",
            "HOTLINE_WEB__PORT": str(port),
            "HOTLINE_TELEPHONY__HOST": "127.0.0.1",
            "HOTLINE_TELEPHONY__PORT": str(free_port()),
        },
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    )
    reader.start()
    try:
        wait_until(
            lambda: "SIP edge listening" in "".join(lines) or proc.poll() is not None,
            timeout=90,
            message="the SIP edge",
        )
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/signin"), 30, message="web")
        assert proc.poll() is None, "".join(lines)
        tree = [proc.pid, *_descendants(proc.pid)]
        assert len(tree) >= 4  # supervisor, web, worker + beat, SIP edge (and its decoders)
        assert {_uid_of(pid) for pid in tree} == {NOBODY.pw_uid}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = "".join(lines)
    assert "SecurityWarning" not in output and "superuser" not in output
    assert "running as root" not in output
    made = [data / "core.db", data / "demo-users.json", data / "prompts", data / "broker"]
    assert all(path.stat().st_uid == NOBODY.pw_uid for path in made)


def _descendants(pid: int) -> list[int]:
    children = sorted(_children_of(pid))
    return children + [grand for child in children for grand in _descendants(child)]


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])  # the real uid; effective and saved follow it
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def test_given_root_runs_scripts_run_then_the_data_dir_is_given_to_the_hotline_user(open_dir):
    """scripts/setup.sh's run_as_platform_user: the system user exists, owns the data dir,
    and the command (here `stat`, in place of `hotline run`) is run."""
    data = open_dir / "var"
    script = (
        f'source {ROOT / "scripts" / "setup.sh"} && run_as_platform_user stat -c "%U %G" "{data}"'
    )
    done = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "HOTLINE_DATA_DIR": str(data)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["hotline", "hotline"]
    assert pwd.getpwnam("hotline").pw_shell == "/usr/sbin/nologin"
