"""Hot spots (hotline.figures.hotspots) on the hand-made city of figures_fixtures plus
located and rising requests made here: counts by category and district per day and week on
the centre's clock, by hour, rising topics week over week with a minimum volume, and the
located requests for the map — on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from datetime import date, timedelta

import pytest
from sqlmodel import Session

from core.errors import InvalidInput
from hotline.figures import Filters
from hotline.figures import hotspots as hs
from tests.hotline.figures_fixtures import END, SH, START, City, L, build_city
from tickets.models import Channel, Ticket


@pytest.fixture
def city(session: Session) -> City:
    return build_city(session)


def _add(session: Session, at, code: str, *, district: str = "城区", lat=None, lng=None) -> int:
    ticket = Ticket(
        number=f"H{secrets.token_hex(6)}",
        description="x",
        channel=Channel.phone,
        created_at=at,
        updated_at=at,
        category_code=code,
        category_name=f"类{code}",
        district=district,
        latitude=lat,
        longitude=lng,
    )
    session.add(ticket)
    session.flush()
    assert ticket.id is not None
    return ticket.id


def test_given_the_city_then_requests_by_category_and_district_per_day_and_week(
    session: Session, city: City
) -> None:
    f = Filters(start=START, end=END)
    cells = hs.over_time(session, filters=f, by=hs.By.category, every=hs.Every.day, tz=SH)
    got = {(c.on, c.key): c.count for c in cells}
    # 1 Dec: t1 020301, t2 t5 020302, t4 0401; 2 Dec: t3 t7 020301; 3 Dec: t8 0401
    assert got == {
        (date(2026, 12, 1), "020301"): 1,
        (date(2026, 12, 1), "020302"): 2,
        (date(2026, 12, 1), "0401"): 1,
        (date(2026, 12, 2), "020301"): 2,
        (date(2026, 12, 3), "0401"): 1,
    }
    weeks = hs.over_time(session, filters=f, by=hs.By.district, every=hs.Every.week, tz=SH)
    # 1–3 Dec are in the week of Monday 30 Nov: 城区 t1 t2 t4 t5 t7, 郊区 t3 t8
    assert {(c.on, c.key): c.count for c in weeks} == {
        (date(2026, 11, 30), "城区"): 5,
        (date(2026, 11, 30), "郊区"): 2,
    }
    assert [(c.key, c.count) for c in hs.totals(session, filters=f, by=hs.By.district)] == [
        ("城区", 5),
        ("郊区", 2),
    ]
    assert hs.by_day(session, filters=f, tz=SH)[:4] == [
        (date(2026, 12, 1), 4), (date(2026, 12, 2), 2), (date(2026, 12, 3), 1),
        (date(2026, 12, 4), 0),
    ]  # fmt: skip
    hours = hs.by_hour(session, filters=f, tz=SH)
    # Beijing hours: 09:00 t1 t3 t8, 09:30 t2, 10:00 t4 t5 t7
    assert hours[9] == 4 and hours[10] == 3 and sum(hours) == 7


def test_given_the_city_then_requests_by_category_and_district_together(
    session: Session, city: City
) -> None:
    cells = hs.matrix(session, filters=Filters(start=START, end=END))
    # 城区: t1 t7 020301, t2 t5 020302, t4 0401; 郊区: t3 020301, t8 0401
    assert {(c, d): n for c, _name, d, n in cells} == {
        ("020301", "城区"): 2,
        ("020302", "城区"): 2,
        ("0401", "城区"): 1,
        ("020301", "郊区"): 1,
        ("0401", "郊区"): 1,
    }
    assert [n for *_rest, n in cells] == sorted((n for *_rest, n in cells), reverse=True)


def test_given_a_unit_filter_then_only_its_tickets_are_counted(
    session: Session, city: City
) -> None:
    f = Filters(start=START, end=END, unit_id=city.units["STREET"])
    assert [(c.key, c.count) for c in hs.totals(session, filters=f, by=hs.By.district)] == [
        ("郊区", 1)
    ]  # t3


def test_given_two_weeks_then_rising_topics_rank_by_ratio_with_a_minimum_volume(
    session: Session,
) -> None:
    end = L(22, 0)
    this_week, last_week = L(18, 10), L(11, 10)
    for _ in range(6):
        _add(session, this_week, "0901")  # 6 vs 2: ×3
    for _ in range(2):
        _add(session, last_week, "0901")
    for _ in range(5):
        _add(session, this_week, "0902")  # 5 vs 0: new, first
    for _ in range(4):
        _add(session, this_week, "0903")  # 4 vs 1: under the minimum of 5
    _add(session, last_week, "0903")
    for _ in range(10):
        _add(session, this_week, "0904")  # 10 vs 5: ×2
    for _ in range(5):
        _add(session, last_week, "0904")
    for _ in range(5):
        _add(session, this_week, "0905")  # 5 vs 7: fell
    for _ in range(7):
        _add(session, last_week, "0905")
    _add(session, end, "0902")  # at the end: outside
    found = hs.rising(session, filters=Filters(start=L(1, 0), end=end), minimum=5)
    assert [(r.code, r.this_week, r.last_week) for r in found] == [
        ("0902", 5, 0),
        ("0901", 6, 2),
        ("0904", 10, 5),
    ]
    assert found[0].ratio is None and found[1].ratio == pytest.approx(3.0)
    lower = hs.rising(session, filters=Filters(start=L(1, 0), end=end), minimum=4)
    assert "0903" in [r.code for r in lower]
    with pytest.raises(InvalidInput):
        hs.rising(session, filters=Filters(start=L(1, 0), end=end), minimum=0)


def test_given_located_tickets_then_the_map_gets_them_newest_first(
    session: Session, city: City
) -> None:
    a = _add(session, L(2, 8), "0901", lat=31.23, lng=121.47)
    b = _add(session, L(4, 8), "0901", district="郊区", lat=31.30, lng=121.50)
    _add(session, L(4, 9), "0901")  # no place
    _add(session, L(9, 9), "0901", lat=31.0, lng=121.0)  # after the period
    found, total = hs.located(session, filters=Filters(start=START, end=END))
    assert total == 2 and [p.ticket_id for p in found] == [b, a]
    assert (found[1].latitude, found[1].longitude) == (31.23, 121.47)
    only, total = hs.located(session, filters=Filters(start=START, end=END, district="城区"))
    assert total == 1 and [p.ticket_id for p in only] == [a]
    first, total = hs.located(session, filters=Filters(start=START, end=END), limit=1)
    assert total == 2 and [p.ticket_id for p in first] == [b]


def test_a_period_in_the_centres_days_is_cut_at_local_midnight(session: Session) -> None:
    # 23:30 Beijing on 1 Dec is 15:30 UTC: the 1st, not the 2nd
    _add(session, L(1, 23, 30), "0901")
    _add(session, L(2, 0, 30), "0901")
    days = hs.by_day(session, filters=Filters(start=L(1, 0), end=L(3, 0)), tz=SH)
    assert days == [(date(2026, 12, 1), 1), (date(2026, 12, 2), 1)]
    assert L(1, 23, 30).astimezone(SH).date() + timedelta(days=1) == date(2026, 12, 2)
