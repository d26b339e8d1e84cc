"""bench/open311.py on tiny cities, on both databases: the GET queries it times answer exactly
the tickets the generator made (recomputed here in Python from its rows), the POSTs it
times file tickets through the Open311 channel, and the JSON has its keys. No timing is
asserted: the machine is shared."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ reaches tests/ by path, as when run as a program

from bench import _common as common  # noqa: E402
from bench import _open311_load as web  # noqa: E402
from bench._analytics_data import Shape, generate, load  # noqa: E402
from bench.open311 import (  # noqa: E402
    NOW,
    TARGETS,
    database,
    expected_ids,
    figures,
    get_params,
    measure_backend,
    prepare_post,
)
from core.db import make_engine  # noqa: E402
from hotline.open311.mapping import OPEN_STATUSES  # noqa: E402
from tickets.models import Ticket  # noqa: E402

# 100 days of tickets: some fall outside the 90-day window the GETs default to.
SHAPE = Shape(tickets=3_000, events=3_000, now=NOW, days=100, direct=0.2)
OPEN = {s.value for s in OPEN_STATUSES}


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def city(backend, tmp_path_factory):
    with database(backend, "test") as url:
        engine = make_engine(url)
        load(engine, SHAPE)
        server = web.Server("city", url, NOW, tmp_path_factory.mktemp("open311"))
        try:
            server.wait_ready()
            yield engine, server
        finally:
            server.stop()
            engine.dispose()


def _open_by_code() -> dict[str, list[tuple[datetime, int, str]]]:
    """Open tickets in the window, by category, newest first, from the generator's rows."""
    found: dict[str, list[tuple[datetime, int, str]]] = {}
    for chunk in generate(SHAPE):
        for t in chunk[0]:
            created = _at(t[20])
            if t[3] in OPEN and NOW - timedelta(days=90) <= created <= NOW and not t[6]:
                found.setdefault(t[14], []).append((created, t[0], t[1]))
    return {code: sorted(rows, reverse=True) for code, rows in found.items()}


def test_given_the_city_then_each_get_answers_its_page_of_open_tickets(city):
    engine, server = city
    import httpx

    by_code = _open_by_code()
    busiest = sorted(by_code, key=lambda c: -len(by_code[c]))[:3]
    assert len(by_code[busiest[0]]) > 4  # there is something to page through, in pages of 2
    # an old ticket of the busiest code (outside the window) is not shown
    with engine.connect() as conn:
        older = conn.execute(
            select(func.count())
            .select_from(Ticket)
            .where(
                Ticket.category_code == busiest[0],
                Ticket.created_at < NOW - timedelta(days=90),
            )
        ).scalar_one()
    assert older > 0
    with httpx.Client(base_url=server.base_url, timeout=60) as client:
        for code in busiest:
            numbers = [n for _, _, n in by_code[code]]
            for page in (1, 2, 3):
                params = get_params(code, page, page_size=2)
                response = client.get("/open311/v2/requests.json", params=params)
                assert response.status_code == 200, response.text
                got = response.json()
                assert [r["service_request_id"] for r in got] == numbers[(page - 1) * 2 :][:2]
                assert {r["status"] for r in got} <= {"open"}
                assert {r["service_code"] for r in got} <= {code}
                # the bench's own check agrees with the generator
                assert expected_ids(engine, params) == numbers[(page - 1) * 2 :][:2]


def test_given_the_post_city_then_each_kind_of_post_files_a_ticket(backend, tmp_path):
    from tickets.models import Channel

    payloads = [
        d.model_dump(mode="json", exclude_none=True)
        for d in common.request_texts(6, n_rules=0, seed_value=5)
    ]
    with database(backend, "posttest") as url:
        keys = prepare_post(url)
        forms = [
            web.open311_form(p, api_key=keys["api_key"], service_code=keys["service_codes"][0])
            for p in payloads
        ]
        server = web.Server("post", url, NOW, tmp_path)
        try:
            server.wait_ready()
            got = [
                web.drive(server.base_url, send, 6, concurrency=2, expect=201)
                for send in (
                    web.api_ticket(payloads, keys["token"]),
                    web.open311_post(forms, "json"),
                    web.open311_post(forms, "xml"),
                )
            ]
        finally:
            server.stop()
        assert [g["failures"] for g in got] == [{}, {}, {}]
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(Ticket.channel, func.count()).group_by(Ticket.channel)
                ).all()
        finally:
            engine.dispose()
    counts = {str(getattr(c, "value", c)): n for c, n in rows}
    assert counts.get(Channel.open311.value) == 12
    assert sum(counts.values()) == 18


def test_given_a_tiny_run_then_the_json_has_its_keys_and_the_answers_check(backend):
    result = measure_backend(
        backend, tickets=2_000, baseline=500, posts=10, concurrency=2, repeats=1, runs=1
    )
    assert {c["mismatched"].__len__() for c in result["answers_checked"].values()} == {0}
    run = result["runs"][0]
    assert [run[f"{k}_failures"] for k in ("api", "json", "xml")] == [{}, {}, {}]
    assert {g["get_failures"] for g in run["get"].values()} == {0}
    out = figures({backend: result}, baseline=500)
    assert set(out["post_requests_per_s"]) == {"json", "xml"}
    assert all(v > 0 for v in out["post_requests_per_s"].values())
    assert out["post_requests_ratio"] == pytest.approx(
        min(run["json_per_s"], run["xml_per_s"]) / run["api_per_s"], abs=1e-3
    )
    assert out["post_cpu_ratio"] == pytest.approx(
        run["api_server_cpu_ms"] / max(run["json_server_cpu_ms"], run["xml_server_cpu_ms"]),
        abs=1e-3,
    )
    assert out["get_requests_p95_ms"] > 0
    assert set(out["targets"]) == set(TARGETS)
    assert ("explain" in result) == (backend == "postgres")
    # production's way: the comparison left to a worker, its tasks waiting, timed apart
    deferred = result["duplicates"]
    assert deferred["compared"] == "by a worker"
    assert deferred["tasks_waiting"] == 2 * 10 + 2 * 20  # the Open311 posts and warm-ups
    assert deferred["sampled"] > 0 and deferred["worker_ms"]["p50"] > 0
