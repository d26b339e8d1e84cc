"""The `hotline` command, through typer's runner and, where the real process matters
(exit status, stderr without a traceback, signals), as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.app import app
from cli.supervisor import Child, supervise
from core.settings import DEFAULT_SECRET, Settings, get_settings
from hotline import migrate
from tests.conftest import wait_until
from tests.services import free_port

HOTLINE = Path(sys.executable).parent / "hotline"
LONG_SECRET = "s" * 40


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean HOTLINE_* environment with its data dir in tmp_path."""
    for name in list(os.environ):
        if name.startswith("HOTLINE_") and not name.startswith("HOTLINE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_given_fresh_data_dir_when_db_upgrade_then_database_is_at_head(env, runner):
    result = runner.invoke(app, ["db", "upgrade"])

    assert result.exit_code == 0, result.output
    assert (env / "core.db").exists()
    assert migrate.current(f"sqlite:///{env / 'core.db'}") == migrate.head()
    assert f"revision {migrate.head()}" in result.output


def test_given_database_url_when_db_upgrade_then_that_database_is_migrated(
    env, runner, tmp_path, monkeypatch
):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("HOTLINE_DATABASE_URL", url)

    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0

    assert migrate.current(url) == migrate.head()
    assert not (env / "core.db").exists()


def test_db_current_tells_whether_an_upgrade_is_needed(env, runner):
    before = runner.invoke(app, ["db", "current"])
    runner.invoke(app, ["db", "upgrade"])
    after = runner.invoke(app, ["db", "current"])

    assert "(none)" in before.output and "hotline db upgrade" in before.output
    assert "up to date" in after.output


@pytest.mark.parametrize(
    "url, message",
    [
        ("not a url at all", "unusable database URL"),
        ("nosuchdb://x/y", "unusable database URL"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/none", "database error"),
    ],
)
def test_given_bad_database_url_when_db_upgrade_then_clear_error_and_exit_1(
    env, runner, monkeypatch, url, message
):
    monkeypatch.setenv("HOTLINE_DATABASE_URL", url)

    result = runner.invoke(app, ["db", "upgrade"])

    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_given_bad_database_url_when_run_as_a_process_then_stderr_has_no_traceback(env):
    proc = subprocess.run(
        [str(HOTLINE), "db", "upgrade"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOTLINE_DATABASE_URL": "nosuchdb://x/y"},
        timeout=60,
    )

    assert proc.returncode == 1
    assert proc.stderr.startswith("error: unusable database URL")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("environment", ["test", "production"])
def test_given_default_secret_outside_development_then_settings_refuse(
    env, monkeypatch, environment
):
    monkeypatch.setenv("HOTLINE_ENVIRONMENT", environment)

    with pytest.raises(ValueError, match="HOTLINE_SECRET_KEY is still the default"):
        Settings()


def test_given_development_then_the_default_secret_is_accepted(env, monkeypatch):
    monkeypatch.setenv("HOTLINE_ENVIRONMENT", "development")

    assert Settings().secret_key == DEFAULT_SECRET


def test_given_production_with_default_secret_when_any_command_then_exit_1_naming_the_fix(
    env, runner, monkeypatch
):
    monkeypatch.setenv("HOTLINE_ENVIRONMENT", "production")

    result = runner.invoke(app, ["db", "current"])

    assert result.exit_code == 1
    assert "HOTLINE_SECRET_KEY is still the default" in result.output
    assert "Traceback" not in result.output


def test_given_production_with_short_secret_then_settings_refuse(env, monkeypatch):
    monkeypatch.setenv("HOTLINE_ENVIRONMENT", "production")
    monkeypatch.setenv("HOTLINE_SECRET_KEY", "too-short")

    with pytest.raises(ValueError, match="at least 32 characters"):
        Settings()


def test_given_production_with_long_secret_then_settings_load(env, monkeypatch):
    monkeypatch.setenv("HOTLINE_ENVIRONMENT", "production")
    monkeypatch.setenv("HOTLINE_SECRET_KEY", LONG_SECRET)
    monkeypatch.setenv("HOTLINE_SMTP__HOST", "mail.example.org")

    settings = Settings()

    assert settings.secret_key == LONG_SECRET
    assert settings.smtp.host == "mail.example.org"


def test_given_production_when_run_then_refused_in_favour_of_separate_processes(
    env, runner, monkeypatch
):
    monkeypatch.setenv("HOTLINE_ENVIRONMENT", "production")
    monkeypatch.setenv("HOTLINE_SECRET_KEY", LONG_SECRET)

    result = runner.invoke(app, ["run"])

    assert result.exit_code == 1
    assert "hotline web" in result.output
    assert not env.exists()


def test_given_production_without_broker_when_worker_then_refused(env, runner, monkeypatch):
    monkeypatch.setenv("HOTLINE_ENVIRONMENT", "production")
    monkeypatch.setenv("HOTLINE_SECRET_KEY", LONG_SECRET)

    result = runner.invoke(app, ["worker"])

    assert result.exit_code == 1
    assert "HOTLINE_BROKER_URL" in result.output


def test_users_add_prints_the_token_once_and_list_shows_the_user(env, runner):
    runner.invoke(app, ["db", "upgrade"])

    added = runner.invoke(app, ["users", "add", "alice", "--role", "admin", "--name", "Alice"])
    listed = runner.invoke(app, ["users", "list"])

    assert added.exit_code == 0, added.output
    printed = {
        line.split(":", 1)[0]: line.split()[1]
        for line in added.output.splitlines()
        if line.startswith(("token:", "password:"))
    }
    token, password = printed["token"], printed["password"]
    assert len(token) >= 20 and len(password) >= 8
    assert "alice" in listed.output and "admin" in listed.output
    assert token not in listed.output and password not in listed.output


def test_users_password_resets_and_unlock_lifts_a_lock_out(env, runner):
    from sqlmodel import select

    from accounts.models import User
    from accounts.signin import verify_password
    from core.db import make_engine, make_session_factory

    runner.invoke(app, ["db", "upgrade"])
    runner.invoke(app, ["users", "add", "bob", "--role", "operator"])
    reset = runner.invoke(app, ["users", "password", "bob"])
    assert reset.exit_code == 0, reset.output
    password = reset.output.split("password of bob: ", 1)[1].split()[0]
    engine = make_engine(f"sqlite:///{env / 'core.db'}")
    try:
        with make_session_factory(engine)() as session:
            bob = session.exec(select(User).where(User.username == "bob")).one()
            assert verify_password(bob, password) and bob.must_change_password
            bob.failed_logins, bob.locked_until = 5, bob.created_at.replace(year=2999)
            session.commit()
        assert runner.invoke(app, ["users", "unlock", "bob"]).exit_code == 0
        with make_session_factory(engine)() as session:
            bob = session.exec(select(User).where(User.username == "bob")).one()
            assert bob.locked_until is None and bob.failed_logins == 0
    finally:
        engine.dispose()
    missing = runner.invoke(app, ["users", "unlock", "nobody"])
    assert missing.exit_code == 1 and "no user 'nobody'" in missing.output


def test_given_taken_username_when_users_add_then_domain_error_exits_1(env, runner):
    runner.invoke(app, ["db", "upgrade"])
    runner.invoke(app, ["users", "add", "alice", "--role", "admin"])

    result = runner.invoke(app, ["users", "add", "alice", "--role", "operator"])

    assert result.exit_code == 1
    assert "error: username 'alice' is taken" in result.output
    assert "Traceback" not in result.output


def test_given_unknown_role_when_users_add_then_roles_are_listed(env, runner):
    runner.invoke(app, ["db", "upgrade"])

    result = runner.invoke(app, ["users", "add", "bob", "--role", "boss"])

    assert result.exit_code == 1
    assert "unknown role 'boss'" in result.output and "dispatcher" in result.output


def test_given_unmigrated_database_when_users_list_then_hint_to_upgrade(env, runner):
    result = runner.invoke(app, ["users", "list"])

    assert result.exit_code == 1
    assert "hotline db upgrade" in result.output


def _until_signalled(name: str) -> Child:
    return Child(name, subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"]))


def test_given_a_child_dies_when_supervised_then_the_rest_are_stopped_and_status_is_1(capsys):
    survivor = _until_signalled("web server")
    dying = Child("worker", subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]))

    assert supervise([survivor, dying], poll=0.05) == 1

    assert survivor.proc.poll() is not None
    assert "worker exited with status 3; stopping the rest" in capsys.readouterr().err


def test_given_sigterm_when_supervised_then_every_child_is_stopped_and_status_is_0():
    children = [_until_signalled("web server"), _until_signalled("worker")]
    handler_before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()

    try:
        assert supervise(children, poll=0.05) == 0
    finally:
        timer.cancel()

    assert all(c.proc.poll() is not None for c in children)
    assert signal.getsignal(signal.SIGTERM) == handler_before


def _children_of(pid: int) -> set[int]:
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == pid:
            found.add(int(status.parent.name))
    return found


def test_run_serves_the_api_seeds_demo_users_and_stops_everything_on_sigterm(env, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [str(HOTLINE), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "HOTLINE_WEB__HOST": "127.0.0.1",
            "HOTLINE_WEB__PORT": str(port),
            "HOTLINE_TELEPHONY__HOST": "127.0.0.1",
            "HOTLINE_TELEPHONY__PORT": str(free_port()),
        },
        start_new_session=True,  # a failed test kills the whole tree (web, worker, SIP edge)
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    )
    reader.start()
    try:
        wait_until(
            lambda: _answers(f"http://127.0.0.1:{port}/docs") or proc.poll() is not None,
            timeout=60,
            message="the web server",
        )
        assert proc.poll() is None, "".join(lines)
        wait_until(
            lambda: "SIP edge listening" in "".join(lines) or proc.poll() is not None,
            timeout=60,
            message="the SIP edge",
        )
        assert proc.poll() is None, "".join(lines)
        children = _children_of(proc.pid)
        assert len(children) == 3  # web, worker + beat, SIP edge
        shared = f"PROMETHEUS_MULTIPROC_DIR={(env / 'metrics').resolve()}".encode()  # core.metrics
        assert all(shared in Path(f"/proc/{pid}/environ").read_bytes() for pid in children)
        _sign_in_as_admin(port, "".join(lines))

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = "".join(lines)
    assert f"http://127.0.0.1:{port}/" in output
    assert f"http://127.0.0.1:{port}/docs" in output
    assert "softphone:" in output
    assert "SIP edge listening on 127.0.0.1:" in output
    assert "admin" in output and "password" in output
    demo_users = json.loads((env / "demo-users.json").read_text("utf-8"))
    assert not any(u["token"] in output for u in demo_users)  # tokens stay in the file
    assert all(not Path(f"/proc/{pid}").exists() for pid in children)
    assert migrate.current(f"sqlite:///{env / 'core.db'}") == migrate.head()


def _sign_in_as_admin(port: int, output: str) -> None:
    """The first start prints the admin's password: it signs in to the pages."""
    import re

    found = re.search(r"admin\s+password (\S+)", output)
    assert found is not None, output
    password = found.group(1)
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=10, follow_redirects=True
    ) as browser:
        form = browser.get("/signin").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token is not None, form[:300]
        csrf = token.group(1)
        signed = browser.post(
            "/signin", data={"username": "admin", "password": password, "csrf_token": csrf}
        )
        assert signed.status_code == 200 and "系统管理员" in signed.text, signed.text[:500]


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_given_next_years_holidays_not_loaded_when_run_starts_then_it_warns_until_entered(
    env, runner
):
    from datetime import date, datetime

    from cli.common import _session
    from cli.processes import _calendar_warnings
    from core.clock import FrozenClock
    from dispatch.policies import set_calendar_day

    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    settings = get_settings()
    late_2026 = FrozenClock(datetime(2026, 12, 1, tzinfo=UTC))
    [warning] = [w for w in _calendar_warnings(settings, late_2026) if "not loaded" in w]
    assert "holidays of 2027 are not loaded" in warning
    with _session(settings) as session:
        set_calendar_day(session, day=date(2027, 1, 1), is_workday=False, name="元旦")
    assert [w for w in _calendar_warnings(settings, late_2026) if "not loaded" in w] == []
