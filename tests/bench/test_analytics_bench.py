"""bench/analytics.py on a tiny city, on both databases: the generated tickets, assignments
and events are what hotline.figures counts (recounted here in Python from the generator's
rows), the dashboard the benchmark times shows exactly compute()'s figures, the export
streams every ticket of the year, and the JSON has its keys. No timing is asserted: the
machine is shared."""

from __future__ import annotations

import csv
import io
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ reaches tests/ by path, as when run as a program

from bench._analytics_data import Shape, generate, load, month_of, units  # noqa: E402
from bench._analytics_export import export_csv, export_via_figures  # noqa: E402
from bench.analytics import (  # noqa: E402
    NOW,
    TARGETS,
    dashboard,
    database,
    figures,
    measure_backend,
)
from core.db import make_session_factory  # noqa: E402
from dispatch.calendar import DEFAULT_TZ  # noqa: E402
from hotline.figures import Filters, compute, unit_rates  # noqa: E402

SHAPE = Shape(tickets=3_000, events=9_000, now=NOW)
START, END = month_of(NOW)
MONTH = Filters(start=START, end=END)
D00 = next(u[0] for u in units() if u[1] == "D00")


@pytest.fixture(scope="module")
def city(backend):
    with database(backend, "test") as engine:
        load(engine, SHAPE)
        yield engine


@pytest.fixture(scope="module")
def rows():
    tickets, assignments, events = [], [], []
    for chunk in generate(SHAPE):
        tickets += chunk[0]
        assignments += chunk[1]
        events += chunk[2]
    return tickets, assignments, events


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC)


def test_given_the_month_then_the_generated_rows_are_what_the_figures_count(city, rows):
    tickets, assignments, events = rows
    in_month = {t[0]: t for t in tickets if START <= _at(t[20]) < END}
    actions: dict[str, set[int]] = {}
    for e in events:
        actions.setdefault(e[4], set()).add(e[0])
    leads = [a for a in assignments if a[3] == "lead" and a[1] in in_month]
    approved = actions["approve_reply"] & in_month.keys()
    with make_session_factory(city)() as session:
        shown = dashboard(session, MONTH, NOW)
        direct = compute(session, filters=MONTH, now=NOW)

    expected = {
        "direct_answer_rate": [len(actions["close_at_intake"] & in_month.keys()), len(in_month)],
        "completion_rate": [
            sum(t[3] in ("closed", "archived") for t in in_month.values()),
            len(in_month),
        ],
        "merge_rate": [sum(t[17] is not None for t in in_month.values()), len(in_month)],
        "callback_rate": [len(approved & actions["callback"]), len(approved)],
        "return_rate": [sum(a[15] is not None for a in leads), len(leads)],
        "extension_rate": [sum(a[16] > 0 for a in leads), len(leads)],
    }
    assert {name: shown["figures"][name] for name in expected} == expected
    assert all(0 < den for _, den in expected.values())  # the month has every kind of row
    assert expected["return_rate"][0] and expected["merge_rate"][0]

    # the dashboard the benchmark times shows exactly what compute() counts
    assert shown["figures"] == {n: [f.numerator, f.denominator] for n, f in direct.items()}

    by_day = Counter(
        _at(t[20]).astimezone(DEFAULT_TZ).date().isoformat() for t in in_month.values()
    )
    assert shown["volume_by_day"] == sorted(by_day.items())
    assert sum(n for _, n in shown["volume_by_day"]) == len(in_month)


def test_given_units_with_children_then_unit_rates_rank_every_lead_unit(city, rows):
    _, assignments, _ = rows
    tickets_in_month = {t[0] for t in rows[0] if START <= _at(t[20]) < END}
    lead_units = {a[2] for a in assignments if a[3] == "lead" and a[1] in tickets_in_month}
    with make_session_factory(city)() as session:
        rates = unit_rates(session, filters=MONTH, now=NOW)
        district = Filters(start=START, end=END, unit_id=D00)  # and its six streets
        below = compute(session, filters=district, now=NOW)
    assert {u.unit_id for u in rates} == lead_units
    below_d00 = {u[0] for u in units() if u[0] == D00 or u[4] == D00}
    assert len(below_d00) == 7
    expected = sum(
        1 for a in assignments if a[3] == "lead" and a[1] in tickets_in_month and a[2] in below_d00
    )
    assert below["return_rate"].denominator == expected > 0


def test_given_a_year_then_the_export_streams_every_ticket(city, rows):
    out = io.StringIO()
    year = (NOW - timedelta(days=366), NOW)
    written = export_csv(city, *year, out)
    lines = list(csv.reader(io.StringIO(out.getvalue())))
    assert written == len(rows[0]) == len(lines) - 1
    assert lines[0][0] == "number" and lines[1][0] == "B0000000001"

    # and through the figures pages' own export, when the benchmark times that one
    page = io.StringIO()
    assert export_via_figures(city, *year, page) == written
    numbers = [row[0] for row in csv.reader(io.StringIO(page.getvalue().lstrip("\ufeff")))]
    assert sorted(numbers[1:]) == sorted(line[0] for line in lines[1:])


def test_given_a_tiny_run_then_the_figures_have_their_keys(backend):
    result = measure_backend(backend, tickets=400, events=1_200, baseline=100, repeats=2, runs=1)
    full = result["full"]
    assert full["tickets"] == 400 and full["events"] >= 1_200
    assert {
        "dashboard_p50_ms",
        "dashboard_p95_ms",
        "dashboard_p95_ms_worst",
        "unit_rates_p95_ms",
        "unit_rates_p95_ms_worst",
        "export_s",
        "export_s_worst",
        "export_rss_growth_mib",
        "dashboard_p95_ms_ratio_vs_100",
        "unit_rates_p95_ms_ratio_vs_100",
        "dashboard_scan_p50_ms",
        "summary_full_build_s",
        "summary_incremental_refresh_ms",
        "summary_incremental_refresh_ms_worst",
    } <= set(full)
    # the dashboard timed reads the summary tables, and they give the scan's numbers
    assert full["summary_matches_scan"] and result["baseline"]["summary_matches_scan"]
    assert full["export_rows"] == 400 and result["baseline"]["export_rows"] == 100
    assert full["export_via"] == "hotline.figures.export"
    out = figures({backend: result}, tickets=400, events=1_200, baseline=100, repeats=2, runs=1)
    assert set(TARGETS) <= set(out) and set(out["targets"]) == set(TARGETS)
    assert out["summary_matches_scan"] and "summary_incremental_refresh_ms" in out
