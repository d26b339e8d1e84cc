"""Configuration errors and a missing database, as an administrator meets them: the real
`hotline` program in a subprocess ends in one `error: …` line naming the setting to change,
exit status 1, no traceback — and creates nothing on its way out."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotline import migrate
from tests.services import free_port

HOTLINE = Path(sys.executable).parent / "hotline"


def clean_env(**extra: str) -> dict[str, str]:
    """This shell's environment without any HOTLINE_ setting but the test run's secret."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HOTLINE_") or k == "HOTLINE_SECRET_KEY"
    }
    return {**env, **extra}


def hotline(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HOTLINE), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.fixture
def held_tcp_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def held_udp_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.mark.parametrize(
    "settings, args, variable",
    [
        ({"HOTLINE_DATABASE_URL": "nosuchdb://x/y"}, ["users", "list"], "HOTLINE_DATABASE_URL"),
        (
            {"HOTLINE_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none"},
            ["db", "upgrade"],
            "HOTLINE_DATABASE_URL",
        ),
        ({"HOTLINE_WEB__PORT": "eighty"}, ["doctor"], "HOTLINE_WEB__PORT"),
        ({"HOTLINE_TELEPHONY__PORT": "-"}, ["run"], "HOTLINE_TELEPHONY__PORT"),
        ({"HOTLINE_TIMEZONE": "Mars/Olympus"}, ["db", "current"], "HOTLINE_TIMEZONE"),
        ({"HOTLINE_ENVIRONMENT": "production"}, ["doctor"], "HOTLINE_SECRET_KEY"),
        (
            {"HOTLINE_ENVIRONMENT": "production", "HOTLINE_SECRET_KEY": "short"},
            ["web"],
            "HOTLINE_SECRET_KEY",
        ),
    ],
)
def test_given_a_bad_setting_when_a_command_runs_then_one_error_line_names_it(
    tmp_path, settings, args, variable
):
    env = clean_env(HOTLINE_DATA_DIR=str(tmp_path / "var"), **settings)
    if settings.get("HOTLINE_ENVIRONMENT") == "production" and "HOTLINE_SECRET_KEY" not in settings:
        env.pop("HOTLINE_SECRET_KEY", None)  # the secret nobody set

    proc = hotline(*args, cwd=tmp_path, env=env)

    assert_one_error_line(proc, variable)
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("args", [["users", "list"], ["seats", "list"], ["sweep"], ["web"]])
def test_given_another_working_directory_when_a_command_needs_the_database_then_it_refuses(
    tmp_path, args
):
    """No HOTLINE_DATA_DIR: `var` under the working directory, where no centre lives. The
    command says where it looked instead of creating an empty database there."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    proc = hotline(*args, cwd=elsewhere, env=clean_env())

    line = assert_one_error_line(proc, "hotline db upgrade", "HOTLINE_DATA_DIR")
    assert f"no database at {elsewhere / 'var' / 'core.db'}" in line
    assert list(elsewhere.iterdir()) == []


def test_given_a_database_behind_head_when_a_command_needs_it_then_it_asks_for_an_upgrade(
    tmp_path,
):
    data = tmp_path / "var"
    data.mkdir()
    migrate.upgrade(f"sqlite:///{data / 'core.db'}", "0001")

    proc = hotline("users", "list", cwd=tmp_path, env=clean_env(HOTLINE_DATA_DIR=str(data)))

    assert_one_error_line(proc, "revision 0001", f"needs {migrate.head()}", "hotline db upgrade")


def test_given_the_data_dir_set_when_run_from_anywhere_then_the_same_centre_answers(tmp_path):
    env = clean_env(HOTLINE_DATA_DIR=str(tmp_path / "centre"))
    assert hotline("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    added = hotline("users", "add", "alice", "--role", "admin", cwd=tmp_path, env=env)
    assert added.returncode == 0, added.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    listed = hotline("users", "list", cwd=elsewhere, env=env)

    assert listed.returncode == 0, listed.stderr
    assert "alice" in listed.stdout
    assert list(elsewhere.iterdir()) == []


def test_given_the_web_port_taken_when_run_then_refused_before_anything_is_created(
    tmp_path, held_tcp_port
):
    env = clean_env(HOTLINE_DATA_DIR=str(tmp_path / "var"))

    proc = hotline(
        "run", "--host", "127.0.0.1", "--port", str(held_tcp_port), cwd=tmp_path, env=env
    )

    assert_one_error_line(proc, f"127.0.0.1:{held_tcp_port}/tcp", "HOTLINE_WEB__PORT", "in use")
    assert not (tmp_path / "var").exists()


def test_given_the_sip_port_taken_when_run_then_refused_naming_it(tmp_path, held_udp_port):
    env = clean_env(HOTLINE_DATA_DIR=str(tmp_path / "var"))

    proc = hotline(
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--sip-port",
        str(held_udp_port),
        cwd=tmp_path,
        env=env,
    )

    assert_one_error_line(proc, f"127.0.0.1:{held_udp_port}/udp", "HOTLINE_TELEPHONY__PORT")
    assert not (tmp_path / "var").exists()


def test_given_the_web_port_taken_when_web_then_refused_naming_it(tmp_path, held_tcp_port):
    env = clean_env(HOTLINE_DATA_DIR=str(tmp_path / "var"), HOTLINE_WEB__HOST="127.0.0.1")
    assert hotline("db", "upgrade", cwd=tmp_path, env=env).returncode == 0

    proc = hotline("web", "--port", str(held_tcp_port), cwd=tmp_path, env=env)

    assert_one_error_line(proc, f"127.0.0.1:{held_tcp_port}/tcp", "HOTLINE_WEB__PORT")


@pytest.mark.parametrize("model", ["missing", "empty"])
def test_given_an_unusable_model_path_when_run_then_refused_naming_the_setting(tmp_path, model):
    path = tmp_path / "model"
    if model == "empty":
        path.mkdir()
    env = clean_env(HOTLINE_DATA_DIR=str(tmp_path / "var"), HOTLINE_ASR__MODEL_PATH=str(path))

    proc = hotline(
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--sip-port",
        str(free_port()),
        cwd=tmp_path,
        env=env,
    )

    assert_one_error_line(proc, str(path), "HOTLINE_ASR__MODEL_PATH")
    assert not (tmp_path / "var").exists()


def test_given_a_data_dir_that_cannot_be_created_when_run_then_refused_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = clean_env(HOTLINE_DATA_DIR=str(blocker / "var"))

    proc = hotline(
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        str(free_port()),
        "--sip-port",
        str(free_port()),
        cwd=tmp_path,
        env=env,
    )

    assert_one_error_line(proc, str(blocker / "var"), "HOTLINE_DATA_DIR")
