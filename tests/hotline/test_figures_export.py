"""The figures' exports (hotline.figures.export) on the hand-made city: CSV is a stream of
lines that starts with the UTF-8 byte-order mark and holds compute()'s numbers; XLSX opens
with openpyxl, has the filters above the table, the same numbers as compute(), and a second
sheet with every figure's definition — on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import secrets
import tracemalloc
from types import GeneratorType

import pytest
from openpyxl import load_workbook
from sqlmodel import Session

from hotline.figures import Filters, compute, export
from hotline.figures import definitions as d
from hotline.figures.board import Ask
from hotline.figures.settings import DEFAULTS
from tests.hotline.figures_fixtures import END, NOW, SH, START, City, L, build_city
from tickets.models import Channel, Ticket


@pytest.fixture
def city(session: Session) -> City:
    return build_city(session)


def _ask(**kw) -> Ask:
    return Ask(filters=Filters(start=START, end=END, **kw), now=NOW, tz=SH)


def _csv(lines) -> list[list[str]]:
    text = "".join(lines)
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:])))


def test_the_figures_table_as_csv_carries_computes_numbers(session: Session, city: City) -> None:
    table = export.build(session, "figures", _ask(), DEFAULTS, {})
    lines = export.csv_lines(table.columns, table.rows)
    assert isinstance(lines, GeneratorType)
    rows = _csv(lines)
    assert rows[0] == list(table.columns)
    truth = compute(session, filters=Filters(start=START, end=END), now=NOW)
    by_name = {r[0]: r for r in rows[1:]}
    for name in ("direct_answer_rate", "on_time_sign_rate", "overdue_rate", "repeat_request_rate"):
        assert (int(by_name[name][2]), int(by_name[name][3])) == (
            truth[name].numerator,
            truth[name].denominator,
        )
    assert by_name["dispatch_accuracy"][4] == "0.8"
    assert float(by_name["overdue_rate"][5]) > 0  # days late, on the overdue row only
    assert by_name["direct_answer_rate"][5] == ""


def test_csv_quotes_commas_and_disarms_formulas() -> None:
    rows = _csv(export.csv_lines(["a", "b"], [["=1+1", "x,y"], [None, -3]]))
    assert rows[1:] == [["'=1+1", "x,y"], ["", "-3"]]


def test_the_xlsx_opens_with_the_filters_above_the_numbers_and_the_definitions(
    session: Session, city: City
) -> None:
    ask = _ask(unit_id=city.units["CITY"])
    table = export.build(session, "figures", ask, DEFAULTS, {})
    data = b"".join(
        export.xlsx_chunks(
            title="Figures",
            headers=list(table.columns),
            rows=table.rows,
            filters=[("Period", "2026-12-01 – 2026-12-07"), ("Unit", "CITY")],
            rate_columns=[4],
        )
    )
    book = load_workbook(io.BytesIO(data), read_only=True)
    assert book.sheetnames[1] == "口径／Definitions"
    sheet = list(book.worksheets[0].iter_rows(values_only=True))
    assert sheet[0][0] == "Figures"
    assert sheet[1][:2] == ("Period", "2026-12-01 – 2026-12-07") and sheet[2][:2] == (
        "Unit",
        "CITY",
    )
    header = sheet.index(tuple(table.columns))
    truth = compute(session, filters=ask.filters, now=NOW)
    got = {row[0]: row for row in sheet[header + 1 :]}
    assert set(got) == set(export.board.CARDS)
    for name, f in truth.items():
        if name in got:
            assert (got[name][2], got[name][3]) == (f.numerator, f.denominator), name
            assert got[name][4] == (pytest.approx(f.rate) if f.rate is not None else None)
    meaning = {row[0]: row for row in book.worksheets[1].iter_rows(min_row=2, values_only=True)}
    assert set(d.NAMES) <= set(meaning)
    assert meaning["satisfaction_rate"][1] == "满意率"
    assert "基本满意" in meaning["satisfaction_rate"][3]


def test_the_unit_table_carries_unit_rates_and_a_handler_sees_only_their_own(
    session: Session, city: City
) -> None:
    table = export.build(session, "units", _ask(), DEFAULTS, {})
    rows = list(table.rows)
    assert {r[2] for r in rows} == {"CITY", "STREET", "OTHER"}
    own = export.build(
        session,
        "units",
        Ask(
            filters=Filters(start=START, end=END, unit_id=city.units["STREET"]),
            now=NOW,
            tz=SH,
            only_unit=city.units["STREET"],
        ),
        DEFAULTS,
        {},
    )
    assert [r[2] for r in own.rows] == ["STREET"]
    sla = export.build(
        session,
        "sla",
        Ask(
            filters=Filters(start=START, end=END, unit_id=city.units["CITY"]),
            now=NOW,
            tz=SH,
            only_unit=city.units["CITY"],
        ),
        DEFAULTS,
        {},
    )
    assert [r[1] for r in sla.rows] == ["CITY"]


def test_the_drill_down_export_lists_the_figures_tickets(session: Session, city: City) -> None:
    table = export.build(
        session, "tickets", _ask(), DEFAULTS, {"figure": "merge_rate", "part": "numerator"}
    )
    rows = list(table.rows)
    assert len(rows) == 1 and rows[0][4] is None  # t5
    table = export.build(
        session, "tickets", _ask(), DEFAULTS, {"figure": "completion_rate", "part": "denominator"}
    )
    assert len(list(table.rows)) == 7


def test_a_long_csv_streams_in_flat_memory(session: Session) -> None:
    for n in range(6000):
        session.add(
            Ticket(
                number=f"M{secrets.token_hex(6)}",
                description="x",
                channel=Channel.phone,
                created_at=L(2, 8),
                updated_at=L(2, 8),
                category_name="供水" * 10,
                district="城区",
                latitude=31.0 + n / 10000,
                longitude=121.0,
            )
        )
    session.flush()
    table = export.build(session, "located", _ask(), DEFAULTS, {})
    lines = export.csv_lines(table.columns, table.rows)
    tracemalloc.start()
    try:
        count = 0
        for _line in lines:
            count += 1
            if count == 500:
                early = tracemalloc.get_traced_memory()[0]
        late, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 6001
    # what is held does not grow with the rows read (6000 rows × ~150 bytes ≈ 900 kB)
    assert late - early < 300_000, (early, late, peak)
