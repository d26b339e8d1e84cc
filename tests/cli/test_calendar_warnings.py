"""`hotline run` warns at start-up about the working calendar: the years whose holidays
nobody loaded, and the years no administrator has confirmed (this one, and from 1 December
the next), until an administrator confirms them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from cli.common import _session
from cli.processes import _calendar_warnings
from core.clock import FrozenClock
from core.settings import get_settings
from dispatch.calendar import mark_year


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A clean HOTLINE_* environment with its data dir in tmp_path, migrated."""
    for name in list(os.environ):
        if name.startswith("HOTLINE_") and not name.startswith("HOTLINE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    yield get_settings()
    get_settings.cache_clear()


def unconfirmed(warnings: list[str]) -> list[str]:
    return [w for w in warnings if "is not confirmed" in w]


def confirm(settings, year: int, now: datetime) -> None:
    with _session(settings) as session:
        mark_year(session, year=year, known=True, marked_by=None, now=now)


def test_given_no_year_confirmed_in_november_then_only_this_year_is_warned_about(settings):
    november = FrozenClock(datetime(2026, 11, 27, 2, tzinfo=UTC))
    [warning] = unconfirmed(_calendar_warnings(settings, november))
    assert warning.startswith("the working calendar of 2026 is not confirmed")
    assert "/admin/calendar" in warning

    confirm(settings, 2026, november.now())
    assert unconfirmed(_calendar_warnings(settings, november)) == []


def test_given_1_december_in_beijing_then_next_year_is_warned_about_until_confirmed(settings):
    # 30 November 16:00 UTC is 1 December 00:00 in the centre's time zone.
    still_november = FrozenClock(datetime(2026, 11, 30, 15, 59, tzinfo=UTC))
    first_december = FrozenClock(datetime(2026, 11, 30, 16, 0, tzinfo=UTC))
    confirm(settings, 2026, still_november.now())
    assert unconfirmed(_calendar_warnings(settings, still_november)) == []

    [warning] = unconfirmed(_calendar_warnings(settings, first_december))
    assert warning.startswith("the working calendar of 2027 is not confirmed")

    confirm(settings, 2027, first_december.now())
    assert unconfirmed(_calendar_warnings(settings, first_december)) == []


def test_given_holidays_not_loaded_then_that_warning_stays_beside_the_confirmation_one(settings):
    """Confirming a year is an administrator's word, not its holidays: a year that is
    confirmed but whose holidays nobody entered is still warned about as not loaded."""
    late = FrozenClock(datetime(2026, 12, 1, 2, tzinfo=UTC))
    warnings = _calendar_warnings(settings, late)
    loaded = [w for w in warnings if "not loaded" in w]
    assert [w.split(" are ")[0] for w in loaded] == ["the holidays of 2027"]
    assert len(unconfirmed(warnings)) == 2

    confirm(settings, 2026, late.now())
    confirm(settings, 2027, late.now())
    assert _calendar_warnings(settings, late) == loaded
