"""`hotline report monthly`: the files, the e-mails with --send (to a real SMTP server), and a
second run that sends nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session
from typer.testing import CliRunner

from cli.app import app
from core.db import make_engine
from core.settings import get_settings
from tests.dispatch.escalation_scene import Scene
from tests.dispatch.test_notify import Mailbox, mailbox  # noqa: F401  (the fixture)
from tests.services import free_port


@pytest.fixture
def city(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mailbox: Mailbox) -> Iterator[Path]:
    """A migrated database with the escalation scene (URBAN and WATER); its data dir."""
    for name in list(os.environ):
        if name.startswith("HOTLINE_") and not name.startswith("HOTLINE_TEST_"):
            if name != "HOTLINE_SECRET_KEY":
                monkeypatch.delenv(name)
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path / "var"))
    url = f"sqlite:///{tmp_path / 'report.db'}"
    monkeypatch.setenv("HOTLINE_DATABASE_URL", url)
    monkeypatch.setenv("HOTLINE_SMTP__HOST", "127.0.0.1")
    monkeypatch.setenv("HOTLINE_SMTP__PORT", str(mailbox.port))
    get_settings.cache_clear()
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    engine = make_engine(url)
    with Session(engine) as session:
        Scene(session)
        session.commit()
    engine.dispose()
    yield tmp_path / "var"
    get_settings.cache_clear()


def test_report_monthly_writes_then_sends_once(city: Path, mailbox: Mailbox):
    runner = CliRunner()
    written = runner.invoke(app, ["report", "monthly", "--month", "2026-11"])
    assert written.exit_code == 0, written.output
    for code in ("URBAN", "WATER"):
        assert (city / "reports" / "monthly" / "2026-11" / f"{code}.xlsx").is_file()
        assert f"{code}: " in written.output
    assert mailbox.messages == []  # without --send nothing goes out

    sent = runner.invoke(
        app, ["report", "monthly", "--month", "2026-11", "--unit", "URBAN", "--send"]
    )
    assert sent.exit_code == 0, sent.output
    assert sent.output.count(": sent") == 2
    assert sorted(m["To"] for m in mailbox.messages) == [
        "head@units.example.org",
        "urban-head@units.example.org",
    ]
    assert all(len(list(m.iter_attachments())) == 1 for m in mailbox.messages)

    again = runner.invoke(
        app, ["report", "monthly", "--month", "2026-11", "--unit", "URBAN", "--send"]
    )
    assert again.exit_code == 0, again.output
    assert again.output.count("sent before, not again") == 2
    assert len(mailbox.messages) == 2


def test_bad_month_or_unit_is_one_clear_line(city: Path):
    runner = CliRunner()
    bad = runner.invoke(app, ["report", "monthly", "--month", "November"])
    assert bad.exit_code == 1
    assert "a month is written YYYY-MM, not 'November'" in bad.output
    unknown = runner.invoke(app, ["report", "monthly", "--month", "2026-11", "--unit", "NOPE"])
    assert unknown.exit_code == 1
    assert "unit 'NOPE' does not exist" in unknown.output


def test_an_smtp_server_that_does_not_answer_leaves_the_mails_to_the_worker(
    city: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("HOTLINE_SMTP__PORT", str(free_port()))  # nobody listens there
    get_settings.cache_clear()
    result = CliRunner().invoke(
        app, ["report", "monthly", "--month", "2026-11", "--unit", "URBAN", "--send"]
    )
    assert result.exit_code == 1
    assert result.output.count(": pending") == 2
    assert result.output.count("queued: the worker retries it") == 2
    assert "2 report(s) or e-mail(s) failed" in result.output
    queued = list((city / "broker" / "queue").iterdir())
    assert len(queued) == 2  # the filesystem broker's messages for the worker
