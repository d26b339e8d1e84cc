"""The units' monthly report: the XLSX e-mailed to a real SMTP server, its numbers those of
hotline.figures, and a second run (beat firing twice) sending nothing."""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime

import pytest
from openpyxl import load_workbook
from sqlalchemy import select
from sqlmodel import Session

from core import runtime
from core.db import make_engine, make_session_factory
from core.errors import InvalidInput
from core.settings import Settings
from dispatch.models import Notification
from dispatch.notify import deliver
from hotline import tasks, worker
from hotline.figures import Filters, compute, overdue, unit_rates
from hotline.figures import settings as rate_settings
from hotline.figures.monthly import (
    SHEET_DEFINITIONS,
    SHEET_REPORT,
    month_period,
    monthly_reports,
    previous_month,
)
from hotline.tables import metadata
from tests.conftest import wait_until
from tests.dispatch.escalation_scene import Scene, savepoint_factory, settings_for
from tests.dispatch.test_notify import Mailbox, mailbox  # noqa: F401  (the fixture)

# 06:00 on 1 December 2026 in Beijing: beat's moment for November's reports
NOW = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def rows_of(sheet) -> dict[str, tuple]:
    """Rows by their second cell (the figure's name)."""
    return {row[1]: row for row in sheet.iter_rows(values_only=True) if len(row) > 1 and row[1]}


def test_the_month_is_the_centres_calendar_month():
    settings = Settings(environment="development")
    assert previous_month(NOW, settings.tz) == "2026-11"
    assert previous_month(datetime(2026, 1, 1, 0, tzinfo=UTC), settings.tz) == "2025-12"
    start, end = month_period("2026-12", settings.tz)
    assert (start, end) == (
        datetime(2026, 11, 30, 16, tzinfo=UTC),
        datetime(2026, 12, 31, 16, tzinfo=UTC),
    )
    with pytest.raises(InvalidInput) as bad:
        month_period("2026-13", settings.tz)
    assert bad.value.details["field"] == "month"


def test_the_report_reaches_the_heads_with_the_figures_and_a_second_run_sends_nothing(
    session, tmp_path, mailbox: Mailbox
):
    scene = Scene(session)  # URBAN: a head user and a head_email; one ticket, overdue by now
    chosen = rate_settings.save(
        session,
        value={
            "weights": {"response": 50, "resolution": 25, "satisfaction": 25},
            "bands": [{"name": "甲档", "at_least": 50}, {"name": "乙档", "at_least": 0}],
        },
        now=NOW,
        user_id=None,
    )
    session.commit()
    settings = settings_for(tmp_path, smtp_port=mailbox.port)
    factory = savepoint_factory(session)

    reports = monthly_reports(
        factory, settings=settings, month="2026-11", now=NOW, unit_code="URBAN"
    )
    [report] = reports
    assert sorted(report.recipients) == ["head@units.example.org", "urban-head@units.example.org"]
    assert report.path == tmp_path / "reports" / "monthly" / "2026-11" / "URBAN.xlsx"
    for ident in report.notification_ids:
        assert deliver(factory, notification_id=ident, now=NOW, settings=settings).value == "sent"
    wait_until(lambda: len(mailbox.messages) == 2)
    assert sorted(m["To"] for m in mailbox.messages) == sorted(report.recipients)

    message = mailbox.messages[0]
    assert "2026-11" in message["Subject"] and "URBAN" in message["Subject"]
    text = message.get_body(preferencelist=("plain",))
    assert text is not None
    assert "附件为贵单位 2026-11" in text.get_content()
    assert "-- attachments" not in text.get_content()
    [attached] = list(message.iter_attachments())
    assert attached.get_content_type() == XLSX
    assert attached.get_filename() == "URBAN.xlsx"
    book = load_workbook(io.BytesIO(attached.get_content()))
    assert book.sheetnames == [SHEET_REPORT, SHEET_DEFINITIONS]

    start, end = month_period("2026-11", settings.tz)
    filters = Filters(start=start, end=end, unit_id=scene.unit.id)
    rows = rows_of(book[SHEET_REPORT])
    expected = compute(session, filters=filters, now=NOW)
    assert expected["overdue_rate"].numerator == 1  # the scene's ticket was never answered
    for name, figure in expected.items():
        assert rows[name][2:5] == (
            figure.numerator,
            figure.denominator,
            None if figure.rate is None else pytest.approx(figure.rate),
        ), name
    ranked = unit_rates(
        session,
        filters=Filters(start=start, end=end),
        now=NOW,
        weights=chosen.weights,
        bands=chosen.bands,
    )
    mine = next(u for u in ranked if u.unit_id == scene.unit.id)
    assert mine.band == "乙档"  # the administrator's bands, not the default ones
    for figure in (mine.response, mine.resolution, mine.satisfaction):
        assert rows[f"unit_{figure.name}"][2:5] == (
            figure.numerator,
            figure.denominator,
            None if figure.rate is None else pytest.approx(figure.rate),
        )
    assert rows["band"][4] == mine.band and rows["rank"][4] == mine.rank
    assert rows["score"][4] == (None if mine.score is None else pytest.approx(mine.score))
    late = overdue(session, filters=filters, now=NOW)
    assert rows["overdue"][2] == late.figure.numerator == 1
    assert rows["overdue"][3] == pytest.approx(late.days_total)
    assert scene.ticket.number in [row[0] for row in book[SHEET_REPORT].iter_rows(values_only=True)]
    definitions = {row[0]: row for row in book[SHEET_DEFINITIONS].iter_rows(values_only=True)}
    assert set(expected) <= set(definitions)
    assert "直接办结" in definitions["direct_answer_rate"][3]

    # beat fires again (or the CLI is run): nothing more is made or sent
    [again] = monthly_reports(
        factory, settings=settings, month="2026-11", now=NOW, unit_code="URBAN"
    )
    assert again.notification_ids == []
    assert sorted(again.already) == sorted(report.recipients)
    session.expire_all()
    made = session.scalars(select(Notification).where(Notification.subject == message["Subject"]))
    assert len(list(made)) == 2
    assert len(mailbox.messages) == 2


def test_the_beat_task_reports_last_month_and_queues_the_mails(
    session, tmp_path, mailbox, monkeypatch
):
    Scene(session)
    session.commit()
    settings = settings_for(tmp_path, smtp_port=mailbox.port)
    factory = savepoint_factory(session)
    from core.clock import FrozenClock

    runtime.set_runtime(settings=settings, session_factory=factory, clock=FrozenClock(NOW))
    queued: list[int] = []
    monkeypatch.setattr(tasks.deliver_notification, "delay", queued.append)
    try:
        first = tasks.monthly_reports.apply().get()
        second = tasks.monthly_reports.apply().get()
    finally:
        runtime.reset_runtime()
    assert first["sent"] == 2 == len(queued)  # URBAN's two heads; WATER has none
    assert second["sent"] == 0
    assert (tmp_path / "reports" / "monthly" / "2026-11" / "WATER.xlsx").is_file()
    entry = worker.BEAT_SCHEDULE["monthly-reports"]
    assert entry["task"] == tasks.monthly_reports.name
    schedule = entry["schedule"]
    assert schedule.day_of_month == {1} and schedule.hour == {6} and schedule.minute == {0}


def test_two_runs_at_once_send_each_head_one_report(fresh_db_url, tmp_path):
    """Beat fired twice, two workers took one each: the unit's row lock makes the second
    see the first one's notifications."""
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    with Session(engine) as session:
        Scene(session)
        session.commit()
    settings = settings_for(tmp_path, smtp_port=1)  # only rows are made here, none sent
    factory = make_session_factory(engine)
    start = threading.Barrier(2)
    made: list[list[int]] = []

    def run() -> None:
        start.wait()
        [report] = monthly_reports(
            factory, settings=settings, month="2026-11", now=NOW, unit_code="URBAN"
        )
        made.append(report.notification_ids)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with Session(engine) as session:
        rows = list(session.scalars(select(Notification).where(Notification.channel == "email")))
    engine.dispose()
    assert sorted(len(ids) for ids in made) == [0, 2]
    assert sorted(row.address for row in rows) == [
        "head@units.example.org",
        "urban-head@units.example.org",
    ]
