"""GET /metrics: who may scrape it, request latency by route template, the database gauges
read at scrape time, and an exposition prometheus_client's own parser reads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session

from core.db import make_engine, make_session_factory
from core.metrics import MULTIPROC_ENV
from core.settings import Settings, WebSettings
from hotline.tables import metadata
from telephony.endpoint import CallDirection
from telephony.models import CallRecord
from tests.dispatch.escalation_scene import CHASE, Scene
from tests.factories import new_ticket
from tickets.models import Status
from web.app import create_app
from web.metrics import template

LOOPBACK = ("127.0.0.1", 50000)


def scrape(client: TestClient, **kwargs) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_loopback_scrapes_without_a_token_others_need_the_bearer_token(session_factory, clock):
    app = create_app(
        settings=Settings(environment="test", web=WebSettings(metrics_token="s3cret-metrics")),
        session_factory=session_factory,
        clock=clock,
    )
    with TestClient(app, client=LOOPBACK) as local:
        assert local.get("/metrics").status_code == 200
    with TestClient(app, client=("10.1.2.3", 40000)) as remote:
        refused = remote.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "unauthorized"
        wrong = remote.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = remote.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
        assert ok.status_code == 200
        assert "hotline_metrics_database_up 1.0" in ok.text


def test_without_a_token_only_loopback_may_scrape(app):
    with TestClient(app, client=("192.168.1.9", 40000)) as remote:
        assert remote.get("/metrics").status_code == 401
        assert remote.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401


def test_request_latency_is_counted_by_route_template_method_and_status(app, world, auth):
    with TestClient(app, client=LOOPBACK) as client:
        route = "/api/v1/tickets/{ticket_id}"
        before = scrape(client)
        for ticket_id in (987654, 987655):  # two URLs, one template
            assert (
                client.get(f"/api/v1/tickets/{ticket_id}", headers=auth("operator")).status_code
                == 404
            )
        client.get("/no/such/page/at/all")
        after = scrape(client)
    count = "hotline_http_request_duration_seconds_count"
    labels = {"route": route, "method": "GET", "status": "404"}
    assert value(after, count, **labels) - value(before, count, **labels) == 2
    assert value(after, "hotline_http_request_duration_seconds_bucket", le="+Inf", **labels) >= 2
    assert value(after, "hotline_http_request_duration_seconds_sum", **labels) > value(
        before, "hotline_http_request_duration_seconds_sum", **labels
    )
    unmatched = {"route": "<unmatched>", "method": "GET", "status": "404"}
    assert value(after, count, **unmatched) - value(before, count, **unmatched) == 1
    # no label per URL: the ids never appear
    assert not any("987654" in str(key) for key in after)


def test_queue_depths_and_calls_in_progress_move_with_the_database(app, world, session, clock):
    with TestClient(app, client=LOOPBACK) as client:
        before = scrape(client)
        assert value(before, "hotline_calls_waiting", queue="operators") == 0
        now = clock.now()
        for i, (queued, answered) in enumerate([(True, False), (True, False), (False, True)]):
            at = now - timedelta(seconds=40 - 10 * i)
            session.add(
                CallRecord(
                    call_id=f"metrics-{i}",
                    direction=CallDirection.INBOUND,
                    caller_number="13800000000",
                    arrived_at=at,
                    queued_at=at if queued else None,
                    answered_at=at if answered else None,
                    created_at=at,
                    updated_at=at,
                )
            )
        # left by an edge that died a day ago: neither waiting nor in progress
        gone = now - timedelta(days=1)
        session.add(
            CallRecord(
                call_id="metrics-stale",
                direction=CallDirection.INBOUND,
                arrived_at=gone,
                queued_at=gone,
                answered_at=gone,
                created_at=gone,
                updated_at=gone,
            )
        )
        tickets = [new_ticket(session, now, f"测试工单{i}") for i in range(4)]
        for ticket, status in zip(
            tickets,
            [Status.pending_dispatch, Status.pending_dispatch, Status.replied, Status.returned],
            strict=True,
        ):
            ticket.status = status
            session.add(ticket)
        session.commit()
        after = scrape(client)
    assert value(after, "hotline_calls_waiting", queue="operators") == 2
    assert value(after, "hotline_calls_longest_wait_seconds", queue="operators") == 40
    assert value(after, "hotline_calls_in_progress", direction="inbound") == 1
    assert value(after, "hotline_calls_in_progress", direction="outbound") == 0
    for queue, grown in (("manual_dispatch", 2), ("review_reply", 1), ("review_return", 1)):
        assert (
            value(after, "hotline_tickets_waiting", queue=queue)
            - value(before, "hotline_tickets_waiting", queue=queue)
            == grown
        )


def test_a_database_that_does_not_answer_still_leaves_the_process_figures(clock):
    def broken():
        raise ConnectionError("database down")

    app = create_app(settings=Settings(environment="test"), session_factory=broken, clock=clock)
    with TestClient(app, client=LOOPBACK) as client:
        samples = scrape(client)
    assert value(samples, "hotline_metrics_database_up") == 0
    assert ("hotline_calls_waiting", (("queue", "operators"),)) not in samples
    assert any(name == "hotline_http_request_duration_seconds_count" for name, _ in samples)


def test_a_celery_task_in_another_process_shows_in_the_web_scrape(
    fresh_db_url, tmp_path, clock, monkeypatch
):
    """The SLA sweep runs as a Celery task in a real child process that writes into the
    multiprocess directory; the web process's scrape adds its figures up."""
    engine = make_engine(fresh_db_url)
    metadata.create_all(engine)
    with Session(engine) as session:
        Scene(session)  # one assignment whose sign-for clock breaches at CHASE
        session.commit()
    folder = tmp_path / "metrics"
    folder.mkdir()
    monkeypatch.setenv(MULTIPROC_ENV, str(folder))
    app = create_app(
        settings=Settings(environment="test"),
        session_factory=make_session_factory(engine),
        clock=clock,
    )
    with TestClient(app, client=LOOPBACK) as client:
        before = scrape(client)
        child_env = {
            **os.environ,
            MULTIPROC_ENV: str(folder),
            "HOTLINE_DATABASE_URL": fresh_db_url,
            "HOTLINE_DATA_DIR": str(tmp_path / "var"),
            "HOTLINE_ENVIRONMENT": "test",
        }
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                "import json, sys, os\n"
                "from hotline.tasks import sweep_sla\n"
                "from prometheus_client import values\n"
                "assert values.ValueClass is not values.MutexValue\n"
                "result = sweep_sla.apply(kwargs={'now': sys.argv[1]}).get()\n"
                "print(os.getpid(), json.dumps(result))",
                (CHASE + timedelta(minutes=1)).isoformat(),
            ],
            env=child_env,
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == 0, child.stderr
        pid, result = child.stdout.split(" ", 1)
        fired = json.loads(result)["fired"]
        assert fired >= 2  # the warning (missed) and the chase at breach
        assert int(pid) != os.getpid()
        assert any(path.name.endswith(f"_{pid}.db") for path in folder.iterdir())
        after = scrape(client)
    engine.dispose()
    assert (
        value(after, "hotline_escalations_fired_total")
        - value(before, "hotline_escalations_fired_total")
        == fired
    )
    assert (
        value(after, "hotline_sla_sweep_duration_seconds_count")
        - value(before, "hotline_sla_sweep_duration_seconds_count")
        == 1
    )
    assert value(after, "hotline_sla_sweep_duration_seconds_sum") > value(
        before, "hotline_sla_sweep_duration_seconds_sum"
    )


DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "hotline-12345.json"


def test_the_grafana_dashboard_only_asks_for_metrics_the_platform_exports(app, world, auth):
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    with TestClient(app, client=LOOPBACK) as client:
        client.get("/api/v1/tickets/1", headers=auth("operator"))
        exported = set(scrape(client))
    names = {name for name, _ in exported}
    exprs = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel["targets"]
    ]
    assert len(exprs) >= 10
    asked = set()
    for title, expr in exprs:
        found = re.findall(r"\bhotline_[a-z_]+", expr)
        assert found, title
        asked.update(found)
    assert asked <= names, asked - names
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    # every figure the issue asks for has a panel
    for metric in (
        "hotline_http_request_duration_seconds_bucket",
        "hotline_calls_waiting",
        "hotline_tickets_waiting",
        "hotline_calls_in_progress",
        "hotline_asr_live_lag_seconds_bucket",
        "hotline_sla_sweep_duration_seconds_bucket",
        "hotline_escalations_fired_total",
    ):
        assert metric in asked, metric


def test_route_templates_keep_the_routers_prefixes_and_never_the_values(tmp_path):
    """One label per route whatever the URL: path parameters (a {name:path} one too) and
    mounted static files put back as their names, unknown paths pooled."""
    seen: list[str] = []
    app = FastAPI()
    router = APIRouter(prefix="/things")

    @router.get("/{thing_id}/parts/{part}")
    def part(thing_id: int, part: str) -> dict[str, str]:
        return {}

    @router.get("/files/{name:path}")
    def file(name: str) -> dict[str, str]:
        return {}

    app.include_router(router, prefix="/api/v1")
    (tmp_path / "css").mkdir()
    (tmp_path / "css" / "site.css").write_text("body{}")
    app.mount("/static", StaticFiles(directory=tmp_path), name="static")

    @app.middleware("http")
    async def capture(request, call_next):
        response = await call_next(request)
        seen.append(template(request.scope))
        return response

    with TestClient(app) as client:
        for url in (
            "/api/v1/things/7/parts/7",
            "/api/v1/things/007/parts/wheel",
            "/api/v1/things/files/a/b/c.txt",
            "/static/css/site.css",
            "/static/missing.css",
            "/nowhere/42",
        ):
            client.get(url)
    assert seen == [
        "/api/v1/things/{thing_id}/parts/{part}",
        "/api/v1/things/{thing_id}/parts/{part}",
        "/api/v1/things/files/{name}",
        "/static/{path}",
        "/static/{path}",
        "<unmatched>",
    ]
