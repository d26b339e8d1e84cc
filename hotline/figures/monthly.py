"""The monthly report of each unit (月度报表), e-mailed to its head(s) as an XLSX.

For a unit and a month (the centre's local calendar month) the workbook holds, on its first
sheet, the unit's figures (``compute`` with ``Filters`` for the unit and its children and
the month), its three rates with the weighted score, band and rank among all units
(``unit_rates`` with the administrator's weights and bands, hotline.figures.settings), and
its overdue assignments (``overdue`` and the tickets behind it); on a second sheet, every
figure's definition (``export.definitions``, as in every export). Clocks are judged at the
moment the report is made. A unit whose report fails is logged and the others go on.

Delivery goes through the notifications every e-mail of the platform goes through
(dispatch.notify): one ``Notification`` row per recipient — the unit's active head users'
addresses and the unit's own ``head_email`` — whose body ends with the structured line
naming the file (``notify.with_attachments``); the e-mail channel attaches it. So a report
gets the same claim, retries with backoff, failure record and requeue after a broker outage
as an escalation e-mail, and no new column (no migration). The file is written under
``<data_dir>/reports/monthly/<YYYY-MM>/<unit code>.xlsx`` by the worker that makes the
report, and any worker may deliver the e-mail: with several worker hosts the reports folder
must be shared between them (as the recordings are), else a worker on another host fails
the notification with "attachment does not exist".

Idempotent: the rows are made under a lock on the unit's row (FOR UPDATE on PostgreSQL; the
write lock on SQLite), and only for addresses that have no pending or sent report of that
unit and month yet (same subject, no escalation) — beat firing twice, two workers or a
re-run of the CLI send nothing twice; a failed one is made anew by the next run.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.styles import Font
from sqlalchemy import select
from sqlmodel import Session, col

from accounts.models import User
from core.db import after_commit, saved_id, session_scope
from core.errors import InvalidInput, NotFound
from core.settings import Settings
from dispatch import notify
from dispatch.models import Notification, NotificationStatus, Unit
from hotline.figures import export
from hotline.figures import settings as rate_settings
from hotline.figures.compute import compute, overdue
from hotline.figures.filters import Filters
from hotline.figures.units import unit_rates
from tickets.models import Ticket

log = logging.getLogger(__name__)

FOLDER = "monthly"
OVERDUE_ROWS = 1000  # the overdue list's length in the workbook; the count is always whole
SHEET_REPORT = "月度报表"
SHEET_DEFINITIONS = "指标说明"


def parse_month(text: str) -> str:
    """ "2026-11" checked; the month as given."""
    try:
        datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise InvalidInput(f"a month is written YYYY-MM, not {text!r}", field="month") from None
    return text


def previous_month(now: datetime, tz: ZoneInfo) -> str:
    local = now.astimezone(tz).date().replace(day=1)
    year, month = (local.year, local.month - 1) if local.month > 1 else (local.year - 1, 12)
    return f"{year:04d}-{month:02d}"


def month_period(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The month's first instant and the next month's, at local midnight, in UTC."""
    year, number = (int(part) for part in parse_month(month).split("-"))
    first = date(year, number, 1)
    following = date(year + number // 12, number % 12 + 1, 1)
    return (
        datetime.combine(first, datetime.min.time(), tz).astimezone(UTC),
        datetime.combine(following, datetime.min.time(), tz).astimezone(UTC),
    )


def relative_path(month: str, code: str) -> str:
    """The report's file, relative to the data dir (as the notification names it)."""
    return f"{notify.REPORTS_DIR}/{FOLDER}/{month}/{code}.xlsx"


def subject(unit: Unit, month: str) -> str:
    return f"12345热线月度报表 {month} {unit.name}（{unit.code}）"


def recipients(session: Session, unit: Unit) -> list[str]:
    """The unit's active head users' addresses and the unit's head_email, each once."""
    heads = session.scalars(
        select(col(User.email)).where(
            col(User.unit_id) == unit.id,
            col(User.is_head).is_(True),
            col(User.active).is_(True),
            col(User.email).is_not(None),
        )
    )
    found = [address for address in heads if address]
    if unit.head_email:
        found.append(unit.head_email)
    return list(dict.fromkeys(address.strip() for address in found))


# ---------------------------------------------------------------- the workbook


def workbook(session: Session, *, unit: Unit, month: str, now: datetime, tz: ZoneInfo) -> Workbook:
    start, end = month_period(month, tz)
    filters = Filters(start=start, end=end, unit_id=saved_id(unit))
    figures = compute(session, filters=filters, now=now)
    chosen = rate_settings.load(session)  # the administrator's weights and bands
    ranked = unit_rates(
        session,
        filters=Filters(start=start, end=end),
        now=now,
        weights=chosen.weights,
        bands=chosen.bands,
    )
    mine = next((entry for entry in ranked if entry.unit_id == unit.id), None)
    late = overdue(session, filters=filters, now=now)

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = SHEET_REPORT
    bold = Font(bold=True)
    sheet.append([f"{unit.name}（{unit.code}）月度报表", month])
    sheet["A1"].font = Font(bold=True, size=14)
    sheet.append(
        [
            "统计期间",
            start.astimezone(tz).date().isoformat(),
            "至",
            (end.astimezone(tz).date()).isoformat(),
            "（不含）",
        ]
    )
    sheet.append(["生成时间", now.astimezone(tz).strftime("%Y-%m-%d %H:%M")])
    sheet.append([])
    sheet.append(["指标", "名称", "分子", "分母", "比率"])
    for cell in sheet[sheet.max_row]:
        cell.font = bold
    for figure in figures.values():
        sheet.append([figure.zh, figure.name, figure.numerator, figure.denominator, figure.rate])
    sheet.append([])
    # named unit_<figure>: the unit's own lead assignments, as ranked among all units
    sheet.append(["三率", "名称", "分子", "分母", "比率"])
    for cell in sheet[sheet.max_row]:
        cell.font = bold
    if mine is None:
        sheet.append(["本月无主办工单，无三率"])
    else:
        for zh, figure in (
            ("响应率", mine.response),
            ("解决率", mine.resolution),
            ("满意率", mine.satisfaction),
        ):
            sheet.append(
                [zh, f"unit_{figure.name}", figure.numerator, figure.denominator, figure.rate]
            )
        sheet.append(["综合得分", "score", None, None, mine.score])
        sheet.append(["分档", "band", None, None, mine.band])
        sheet.append(["排名", "rank", None, len(ranked), mine.rank])
    sheet.append([])
    sheet.append(["超期", "名称", "件数", "超期天数合计", "最长超期天数"])
    for cell in sheet[sheet.max_row]:
        cell.font = bold
    sheet.append(
        [
            "超期件数",
            "overdue",
            late.figure.numerator,
            late.days_total,
            late.days_max,
        ]
    )
    sheet.append([])
    sheet.append(["超期工单", "受理时间", "状态", "标题"])
    for cell in sheet[sheet.max_row]:
        cell.font = bold
    ids = late.figure.numerator_ids.subquery()
    rows = session.execute(
        select(col(Ticket.number), col(Ticket.created_at), col(Ticket.status), col(Ticket.title))
        .where(col(Ticket.id).in_(select(ids.c.ticket_id)))
        .order_by(col(Ticket.created_at), col(Ticket.id))
        .limit(OVERDUE_ROWS)
    ).all()
    for number, created, status, title in rows:
        sheet.append(
            [number, created.astimezone(tz).strftime("%Y-%m-%d %H:%M"), str(status), title or ""]
        )
    sheet.column_dimensions["A"].width = 24
    sheet.column_dimensions["B"].width = 22

    # the same definitions sheet as every other export of the figures
    defined = book.create_sheet(SHEET_DEFINITIONS)
    defined.append(["名称", "指标", "统计对象", "定义"])
    for cell in defined[1]:
        cell.font = bold
    for row in export.definitions():
        defined.append(list(row))
    defined.column_dimensions["D"].width = 120
    return book


def write(book: Workbook, path: Path) -> None:
    """Atomically: a report being rewritten is never attached half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        book.save(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- making and sending


@dataclass
class UnitReport:
    unit_code: str
    path: Path
    recipients: list[str]
    notification_ids: list[int] = field(default_factory=list)  # made by this run
    already: list[str] = field(default_factory=list)  # addresses sent (or pending) before
    error: str | None = None  # the report could not be made (logged with its traceback)


def _units(session: Session, unit_code: str | None) -> list[Unit]:
    query = select(Unit).order_by(col(Unit.code))
    if unit_code is not None:
        found = list(session.scalars(query.where(col(Unit.code) == unit_code)))
        if not found:
            raise NotFound(f"unit {unit_code!r} does not exist", unit_code=unit_code)
        return found
    return list(session.scalars(query.where(col(Unit.active).is_(True))))


def monthly_reports(
    session_factory: Callable[[], Session],
    *,
    settings: Settings,
    month: str,
    now: datetime,
    unit_code: str | None = None,
    send: bool = True,
    enqueue: Callable[[int], object] | None = None,
) -> list[UnitReport]:
    """Write each unit's report for ``month`` (every active unit, or ``unit_code``) and, with
    ``send``, make its e-mails to the recipients who have none yet; ``enqueue(id)`` after
    commit for each. Without SMTP configured nothing is sent: the files are still written."""
    parse_month(month)
    with session_scope(session_factory) as session:
        units = [(saved_id(u), u.code) for u in _units(session, unit_code)]
    made: list[UnitReport] = []
    for unit_id, code in units:
        report = UnitReport(code, settings.data_dir / relative_path(month, code), [])
        made.append(report)
        try:
            with session_scope(session_factory) as session:
                unit = session.get(Unit, unit_id)
                assert unit is not None
                book = workbook(session, unit=unit, month=month, now=now, tz=settings.tz)
                report.recipients = recipients(session, unit)
            write(book, report.path)
            if send and settings.smtp.host and report.recipients:
                _notify(
                    session_factory,
                    report=report,
                    unit_id=unit_id,
                    month=month,
                    now=now,
                    enqueue=enqueue,
                )
        except Exception as exc:  # one unit's failure does not keep the others' reports
            log.exception("the %s report of unit %s failed", month, code)
            report.error = f"{type(exc).__name__}: {exc}"
    return made


def _notify(
    session_factory: Callable[[], Session],
    *,
    report: UnitReport,
    unit_id: int,
    month: str,
    now: datetime,
    enqueue: Callable[[int], object] | None,
) -> None:
    with session_scope(session_factory) as session:
        # Two runs at once queue here, so the second sees the first one's rows.
        unit = session.get(Unit, unit_id, with_for_update=True)
        assert unit is not None
        title = subject(unit, month)
        report.already = list(
            session.scalars(
                select(col(Notification.address)).where(
                    col(Notification.escalation_id).is_(None),
                    col(Notification.channel) == "email",
                    col(Notification.subject) == title,
                    col(Notification.status).in_(
                        [NotificationStatus.pending, NotificationStatus.sent]
                    ),
                )
            )
        )
        text = (
            f"{unit.name}：\n\n附件为贵单位 {month} 的 12345 热线月度报表（各项指标、三率与分档、"
            f"超期工单），第二页为指标说明。\n\nThe attached workbook is {unit.code}'s 12345 "
            f"hotline report for {month}: its figures, the three rates and band, overdue "
            f"tickets, and the figures' definitions on the second sheet."
        )
        body = notify.with_attachments(text, [relative_path(month, unit.code)])
        rows = []
        for address in report.recipients:
            if address in report.already:
                continue
            row = Notification(
                user_id=session.scalars(
                    select(col(User.id)).where(
                        col(User.email) == address, col(User.unit_id) == unit_id
                    )
                ).first(),
                channel="email",
                address=address,
                subject=title,
                body=body,
                created_at=now,
            )
            session.add(row)
            rows.append(row)
        session.flush()
        report.notification_ids = [saved_id(row) for row in rows]
        if enqueue is not None:
            ids = list(report.notification_ids)
            after_commit(session, lambda: _enqueue_all(enqueue, ids))


def _enqueue_all(enqueue: Callable[[int], object], ids: Iterable[int]) -> None:
    for ident in ids:
        enqueue(ident)
