"""Every table the figures' pages show, as CSV or XLSX.

``build`` reads a table (its column keys and its rows, rows lazily where they can be many:
the tickets behind a figure, the located requests); ``csv_lines`` and ``xlsx_chunks`` write
it out a row at a time, so an export's memory does not grow with its length:

* CSV: UTF-8 with a byte-order mark (Excel then reads the Chinese right), one header line,
  one line per row; a text cell that a spreadsheet would take for a formula (= + - @) is
  written with a leading apostrophe.
* XLSX: openpyxl's write-only workbook (rows go to a temporary file as appended), saved to a
  temporary file and read back in chunks. The first sheet is the table with the filters
  applied written above it; the second, "口径／Definitions" (a full-width slash: Excel
  refuses "/" in a sheet's name), has each figure's definition — the docstrings of
  hotline.figures.definitions, which are the definitions.

Column headings and the filters' wording are the caller's (the pages translate them).
"""

from __future__ import annotations

import csv
import inspect
import io
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from sqlalchemy import select
from sqlmodel import Session

from core.errors import InvalidInput
from hotline.figures import board, call_drill, hotspots
from hotline.figures import definitions as d
from hotline.figures.board import Ask
from hotline.figures.calls import CallFigures
from hotline.figures.compute import overdue
from hotline.figures.filters import T, resolve
from hotline.figures.settings import RateSettings
from hotline.figures.units import score

DEFINITIONS_SHEET = "口径／Definitions"  # a sheet name may not hold "/": the full-width one
CHUNK = 64 * 1024
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
STREAM_ROWS = 1_000


@dataclass
class Table:
    name: str
    columns: tuple[str, ...]
    rows: Iterable[Sequence[Any]]
    rate_columns: frozenset[str] = frozenset()  # shown as percentages in XLSX


Builder = Callable[[Session, Ask, RateSettings, Mapping[str, str]], Table]


def _rate(n: int, den: int) -> float | None:
    return n / den if den else None


def _figures(session: Session, ask: Ask, chosen: RateSettings, params: Mapping[str, str]) -> Table:
    cards = board.cards(session, ask)
    rows: list[tuple[Any, ...]] = []
    for name, f in cards.figures.items():
        late = cards.overdue if name == "overdue_rate" else None
        rows.append(
            (
                name,
                f.zh,
                f.numerator,
                f.denominator,
                f.rate,
                None if late is None else round(late.days_total, 2),
                None if late is None or late.days_max is None else round(late.days_max, 2),
            )
        )
    columns = ("figure", "name", "numerator", "denominator", "rate", "days_late", "days_late_max")
    return Table("figures", columns, rows, frozenset({"rate"}))


def _units(session: Session, ask: Ask, chosen: RateSettings, params: Mapping[str, str]) -> Table:
    rows = []
    for u in board.ranking(session, ask, chosen):
        r = u.rates
        rows.append(
            (
                r.rank,
                u.code,
                u.name,
                r.response.numerator,
                r.response.denominator,
                r.response.rate,
                r.resolution.numerator,
                r.resolution.denominator,
                r.resolution.rate,
                r.satisfaction.numerator,
                r.satisfaction.denominator,
                r.satisfaction.rate,
                None if r.score is None else round(r.score, 2),
                r.band,
            )
        )
    columns = (
        "rank", "unit_code", "unit", "response_n", "response_d", "response_rate",
        "resolution_n", "resolution_d", "resolution_rate", "satisfaction_n", "satisfaction_d",
        "satisfaction_rate", "score", "band",
    )  # fmt: skip
    rates = frozenset({"response_rate", "resolution_rate", "satisfaction_rate"})
    return Table("units", columns, rows, rates)


def _sla(session: Session, ask: Ask, chosen: RateSettings, params: Mapping[str, str]) -> Table:
    rows = []
    for u in board.sla_by_unit(session, ask):
        row: list[Any] = [u.code, u.name]
        for make in board.SLA:
            n, den = u.counts.get(make.__name__, (0, 0))
            row += [n, den, _rate(n, den)]
        rows.append(tuple(row))
    columns = (
        "unit_code", "unit", "sign_n", "sign_d", "sign_rate", "reply_n", "reply_d",
        "reply_rate", "close_n", "close_d", "close_rate",
    )  # fmt: skip
    return Table("sla", columns, rows, frozenset({"sign_rate", "reply_rate", "close_rate"}))


def _volume_day(session: Session, ask: Ask, chosen: RateSettings, p: Mapping[str, str]) -> Table:
    rows = hotspots.by_day(session, filters=ask.filters, tz=ask.tz)
    return Table("volume_day", ("day", "requests"), rows)


def _volume_hour(session: Session, ask: Ask, chosen: RateSettings, p: Mapping[str, str]) -> Table:
    hours = hotspots.by_hour(session, filters=ask.filters, tz=ask.tz)
    return Table("volume_hour", ("hour", "requests"), list(enumerate(hours)))


def _categories(session: Session, ask: Ask, chosen: RateSettings, p: Mapping[str, str]) -> Table:
    found = hotspots.totals(session, filters=ask.filters, by=hotspots.By.category)
    rows = [(c.key, c.label, c.count) for c in found]
    return Table("categories", ("category_code", "category", "requests"), rows)


def _districts(session: Session, ask: Ask, chosen: RateSettings, p: Mapping[str, str]) -> Table:
    found = hotspots.totals(session, filters=ask.filters, by=hotspots.By.district)
    return Table("districts", ("district", "requests"), [(c.key, c.count) for c in found])


def _calls(session: Session, ask: Ask, chosen: RateSettings, p: Mapping[str, str]) -> Table:
    rows = [
        (
            c.day,
            c.offered,
            c.answered,
            c.abandoned,
            c.counted,
            c.within_target,
            c.within_target_rate,
        )  # fmt: skip
        for c in board.calls_by_day(session, ask)
    ]
    columns = (
        "day",
        "offered",
        "answered",
        "abandoned",
        "counted",
        "within_target",
        "within_target_rate",
    )
    return Table("calls", columns, rows, frozenset({"within_target_rate"}))


def choice(params: Mapping[str, str], name: str, kind: type[Any], default: Any) -> Any:
    raw = params.get(name) or default
    try:
        return kind(raw)
    except ValueError:
        raise InvalidInput(
            "not one of the choices offered", field=name, choices=[str(m.value) for m in kind]
        ) from None


def _hotspots(session: Session, ask: Ask, chosen: RateSettings, p: Mapping[str, str]) -> Table:
    by = choice(p, "by", hotspots.By, hotspots.By.category)
    every = choice(p, "every", hotspots.Every, hotspots.Every.day)
    cells = hotspots.over_time(session, filters=ask.filters, by=by, every=every, tz=ask.tz)
    rows = [(c.on, c.key, c.label, c.count) for c in cells]
    return Table("hotspots", ("from", "key", "label", "requests"), rows)


def _matrix(session: Session, ask: Ask, chosen: RateSettings, p: Mapping[str, str]) -> Table:
    rows = hotspots.matrix(session, filters=ask.filters)
    return Table("matrix", ("category_code", "category", "district", "requests"), rows)


def _rising(session: Session, ask: Ask, chosen: RateSettings, p: Mapping[str, str]) -> Table:
    minimum = minimum_of(p)
    found = hotspots.rising(session, filters=ask.filters, minimum=minimum)
    rows = [(r.code, r.name, r.this_week, r.last_week, r.ratio) for r in found]
    return Table("rising", ("category_code", "category", "this_week", "last_week", "ratio"), rows)


def minimum_of(params: Mapping[str, str]) -> int:
    raw = (params.get("minimum") or str(hotspots.RISING_MIN)).strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise InvalidInput("the minimum volume is a whole number from 1", field="minimum")
    return int(raw)


def _located(session: Session, ask: Ask, chosen: RateSettings, p: Mapping[str, str]) -> Table:
    scope = resolve(session, ask.filters)
    query = (
        select(
            T.c.number, T.c.created_at, T.c.latitude, T.c.longitude, T.c.category_name, T.c.district
        )
        .where(*scope.ticket_where(), T.c.latitude.is_not(None), T.c.longitude.is_not(None))
        .order_by(T.c.created_at.desc(), T.c.id.desc())
        .execution_options(yield_per=STREAM_ROWS)
    )
    columns = ("number", "created_at", "latitude", "longitude", "category", "district")
    return Table("located", columns, _streamed(session, query, ask))


def _streamed(session: Session, query: Any, ask: Ask) -> Iterator[tuple[Any, ...]]:
    for row in session.execute(query):
        yield tuple(
            v.astimezone(ask.tz).replace(tzinfo=None) if isinstance(v, datetime) else v for v in row
        )


PARTS = ("numerator", "denominator")


def _tickets(session: Session, ask: Ask, chosen: RateSettings, p: Mapping[str, str]) -> Table:
    f = board.figure(session, ask, p.get("figure", ""))
    part = p.get("part", "numerator")
    if part not in PARTS:
        raise InvalidInput("part is numerator or denominator", field="part")
    ids = (f.numerator_ids if part == "numerator" else f.denominator_ids).subquery("ids")
    query = (
        select(T.c.number, T.c.created_at, T.c.status, T.c.channel, T.c.category_name, T.c.district)
        .where(T.c.id.in_(select(ids.c[0])))
        .order_by(T.c.created_at.desc(), T.c.id.desc())
        .execution_options(yield_per=STREAM_ROWS)
    )
    columns = ("number", "created_at", "status", "channel", "category", "district")
    return Table("tickets", columns, _streamed(session, query, ask))


def _call_list(session: Session, ask: Ask, chosen: RateSettings, p: Mapping[str, str]) -> Table:
    """The calls behind a call figure (call_drill), as the tickets behind a ticket figure."""
    name = p.get("figure", "")
    if name not in call_drill.CALL_FIGURES:
        raise InvalidInput("no such call figure", field="figure")
    part = p.get("part", "numerator")
    if part not in PARTS:
        raise InvalidInput("part is numerator or denominator", field="part")
    f = call_drill.figure(session, ask, name)
    ids = f.numerator_ids if part == "numerator" else f.denominator_ids
    rows = (
        (
            c.arrived_at.astimezone(ask.tz).replace(tzinfo=None),
            c.caller,
            c.queue_wait_s,
            c.outcome,
            " ".join(filter(None, (c.agent_name, c.agent_extension))) or None,
            c.ticket_number,
        )
        for c in call_drill.all_calls(session, ids)
    )
    columns = ("arrived_at", "caller", "queue_wait_s", "queue_outcome", "agent", "number")
    return Table("call_list", columns, rows)


TABLES: dict[str, Builder] = {
    "figures": _figures,
    "units": _units,
    "sla": _sla,
    "volume_day": _volume_day,
    "volume_hour": _volume_hour,
    "categories": _categories,
    "districts": _districts,
    "calls": _calls,
    "hotspots": _hotspots,
    "matrix": _matrix,
    "rising": _rising,
    "located": _located,
    "tickets": _tickets,
    "call_list": _call_list,
}
# What a handler may export (of their own unit): no calls (they belong to no unit) and no
# centre-wide hot spots.
HANDLER_TABLES = frozenset(
    {"figures", "units", "sla", "volume_day", "volume_hour", "categories", "districts", "tickets"}
)


def build(
    session: Session, name: str, ask: Ask, chosen: RateSettings, params: Mapping[str, str]
) -> Table:
    try:
        builder = TABLES[name]
    except KeyError:
        raise InvalidInput(f"no table {name!r}", field="table") from None
    return builder(session, ask, chosen, params)


# ---------------------------------------------------------------- definitions


def definitions() -> list[tuple[str, str, str, str]]:
    """(name, 中文名, what is counted, definition) of every figure the pages show: the ticket
    and unit figures (their docstrings), 超期天数, the unit score and the call figures."""
    rows = []
    for make in d.ALL:
        doc = inspect.getdoc(make) or ""
        title = doc.split("—", 1)[0].strip()
        kind = "ticket" if make in d.TICKET_FIGURES else "lead assignment"
        rows.append((make.__name__, title, kind, doc))
    rows.append(("overdue_days", "超期天数", "lead assignment", inspect.getdoc(overdue) or ""))
    rows.append(("unit_score", "综合得分 / 分档", "unit", inspect.getdoc(score) or ""))
    rows.append(
        ("calls", "接通率 / 15秒接通率 / 放弃率", "call", inspect.getdoc(CallFigures) or "")
    )
    return rows


# ---------------------------------------------------------------- writers


def _cell_text(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_lines(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    """The table as CSV lines: the first starts with the UTF-8 byte-order mark."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(values: Sequence[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_cell_text(v) for v in values])
        return buffer.getvalue()

    yield "\ufeff" + line(headers)
    for row in rows:
        yield line(row)


def _xlsx_value(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.replace(tzinfo=None)
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def xlsx_chunks(
    *,
    title: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    filters: Sequence[tuple[str, str]],
    rate_columns: Sequence[int] = (),
    definition_headers: Sequence[str] = ("Figure", "名称", "Counts", "Definition"),
    sheet_title: str = "Table",
) -> Iterator[bytes]:
    """The workbook, in chunks: the table (filters above it), then the definitions."""
    book = Workbook(write_only=True)
    sheet = book.create_sheet(_sheet_name(sheet_title))
    bold = Font(bold=True)

    def strong(text: str) -> WriteOnlyCell:
        cell = WriteOnlyCell(sheet, value=text)
        cell.font = bold
        return cell

    sheet.append([strong(title)])
    for label, value in filters:
        sheet.append([label, value])
    sheet.append([])
    sheet.append([strong(h) for h in headers])
    percent = set(rate_columns)
    for row in rows:
        cells: list[Any] = []
        for index, value in enumerate(row):
            value = _xlsx_value(value)
            if index in percent and isinstance(value, float):
                cell = WriteOnlyCell(sheet, value=value)
                cell.number_format = "0.0%"
                cells.append(cell)
            else:
                cells.append(value)
        sheet.append(cells)
    info = book.create_sheet(DEFINITIONS_SHEET)
    info.append([WriteOnlyCell(info, value=h) for h in definition_headers])
    for row in definitions():
        info.append(list(row))
    with tempfile.TemporaryFile() as out:
        book.save(out)
        out.seek(0)
        while chunk := out.read(CHUNK):
            yield chunk


def _sheet_name(text: str) -> str:
    cleaned = "".join(" " if c in "[]:*?/\\" else c for c in text).strip()
    return (cleaned or "Table")[:31]
