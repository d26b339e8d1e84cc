"""Celery's "running the worker with superuser privileges" warning, addressed: production
refuses to start a worker or beat as root, with one error line saying what to do."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli import processes
from cli.app import app as hotline
from core.settings import get_settings


@pytest.fixture
def production(monkeypatch, tmp_path):
    monkeypatch.setenv("HOTLINE_ENVIRONMENT", "production")
    monkeypatch.setenv("HOTLINE_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("HOTLINE_BROKER_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path))
    execs: list[list[str]] = []
    monkeypatch.setattr(processes, "_exec", execs.append)
    get_settings.cache_clear()
    yield execs
    get_settings.cache_clear()


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_given_root_in_production_then_worker_and_beat_refuse_with_one_line(
    production, monkeypatch, command
):
    monkeypatch.setattr(processes.os, "geteuid", lambda: 0)
    result = CliRunner().invoke(hotline, [command])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: `hotline {command}` must not run as root")
    assert "Traceback" not in result.output and production == []


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_given_an_unprivileged_user_in_production_then_worker_and_beat_start(
    production, monkeypatch, command
):
    monkeypatch.setattr(processes.os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(hotline, [command])
    assert result.exit_code == 0, result.output
    [argv] = production
    assert argv[3:6] == ["-A", processes.WORKER_APP, command]
