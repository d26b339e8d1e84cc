"""`hotline sweep`: one SLA sweep by hand, and what it says when the broker is down."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session, col
from typer.testing import CliRunner

from cli.app import app
from core.db import make_engine
from core.settings import get_settings
from dispatch.models import Notification, NotificationStatus
from tests.dispatch.escalation_scene import Scene
from tests.services import free_port


@pytest.fixture
def overdue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated database with one long-overdue assignment; its URL."""
    for name in list(os.environ):
        if name.startswith("HOTLINE_") and not name.startswith("HOTLINE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path / "var"))
    url = f"sqlite:///{tmp_path / 'sweep.db'}"
    monkeypatch.setenv("HOTLINE_DATABASE_URL", url)
    monkeypatch.setenv("HOTLINE_SMTP__HOST", "127.0.0.1")
    get_settings.cache_clear()
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    engine = make_engine(url)
    with Session(engine) as session:
        Scene(session)
        session.commit()
    engine.dispose()
    yield url
    get_settings.cache_clear()


def _deliveries(url: str) -> list[Notification]:
    engine = make_engine(url)
    with Session(engine) as session:
        rows = list(
            session.scalars(select(Notification).where(col(Notification.channel) != "inapp"))
        )
    engine.dispose()
    return rows


def test_given_broker_down_when_sweep_then_it_fails_fast_with_exit_1_and_loses_nothing(
    overdue, monkeypatch
):
    monkeypatch.setenv("HOTLINE_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    started = time.monotonic()
    result = CliRunner().invoke(app, ["sweep"])
    elapsed = time.monotonic() - started

    assert result.exit_code == 1, result.output
    assert "unreachable" in result.output and "requeue-notifications" in result.output
    assert "Traceback" not in result.output
    assert elapsed < 15
    deliveries = _deliveries(overdue)
    assert deliveries, "the overdue assignment's steps fire e-mails"
    # every one stays pending and untried: the requeue beat task will queue it
    assert {(n.status, n.attempts) for n in deliveries} == {(NotificationStatus.pending, 0)}


def test_given_broker_up_when_sweep_then_deliveries_are_queued_and_exit_0(overdue):
    result = CliRunner().invoke(app, ["sweep"])

    assert result.exit_code == 0, result.output
    queued = len(_deliveries(overdue))
    assert queued > 0 and f"{queued} e-mail/webhook delivery(ies) queued" in result.output
