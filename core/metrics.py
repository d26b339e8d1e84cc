"""The platform's Prometheus metrics, defined once, low enough that the web, the Celery
worker and the SIP edge all record into them; web.metrics serves them at ``/metrics``.

Metrics recorded where they happen (request latency in the web, the SLA sweep and the
escalations it fires in the worker, live ASR lag in the SIP edge) live in several processes;
``hotline run`` sets ``PROMETHEUS_MULTIPROC_DIR`` to ``<data_dir>/metrics`` for its
children (``multiproc_env``, emptied at each start), so that each process writes its values
to memory-mapped files there and the web's scrape adds them up (prometheus_client's
multiprocess mode). prometheus_client chooses its storage when it is first imported, from
that variable: it must be in the environment before the process starts, which is why the
supervisor, not the process itself, sets it. Without it (a lone ``hotline web``, the tests)
the values are the process's own. A worker or SIP host of a larger installation, with no
web process beside it, serves its directory with ``hotline metrics`` (cli.metrics) instead.

Figures that the database already knows (calls waiting, calls in progress, tickets waiting
for dispatch and review) are not metrics kept by anyone: web.metrics reads them at scrape
time (hotline.gauges), so they are right whichever process changed them and after any
restart.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import Counter, Histogram, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector

from core.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Pages answer in tens of milliseconds; intake and exports take seconds; live streams stay
# open for minutes (they have a route of their own, so they do not blur the others).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REQUEST_SECONDS = Histogram(
    "hotline_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template, method and status",
    ["route", "method", "status"],
    buckets=REQUEST_BUCKETS,
)
SLA_SWEEP_SECONDS = Histogram(
    "hotline_sla_sweep_duration_seconds",
    "Time one SLA sweep (dispatch.sweep_sla) took",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
ESCALATIONS_FIRED = Counter(
    "hotline_escalations_fired",
    "Escalation steps (warning, chase, supervision, leadership) fired by SLA sweeps",
)
SLA_SWEEP_FAILURES = Counter(
    "hotline_sla_sweep_failed_assignments",
    "Assignments an SLA sweep skipped after an error (retried by the next sweep)",
)
# Live decoding's backlog, observed after each batch a call's decoder takes: over the
# configured asr.live_lag_s (2 s by default) the operator's running text is late.
ASR_LIVE_LAG_SECONDS = Histogram(
    "hotline_asr_live_lag_seconds",
    "Audio a live call's decoder had not decoded yet, observed after each batch",
    buckets=(0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0),
)

# Read from the database at scrape time (web.metrics); listed here so that every name the
# platform exports is in one place (the Grafana dashboard's test checks against it).
SCRAPE_TIME_GAUGES = {
    "hotline_calls_waiting": "Calls waiting in a queue now",
    "hotline_calls_longest_wait_seconds": "How long the longest-waiting call has waited",
    "hotline_calls_in_progress": "Calls answered and not ended, by direction",
    "hotline_tickets_waiting": "Tickets waiting for the centre: manual dispatch or review",
}


def multiproc_dir(settings: Settings) -> Path:
    return (settings.data_dir / "metrics").resolve()


def multiproc_env(settings: Settings) -> dict[str, str]:
    """The environment for a supervisor's children: the metrics directory, emptied — the
    files of processes that ran before would add last run's counts to this one's."""
    folder = multiproc_dir(settings)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return {MULTIPROC_ENV: str(folder)}


def allowed(client_host: str | None, authorization: str | None, token: str | None) -> bool:
    """Who may scrape: loopback, or anyone with ``Authorization: Bearer <token>`` when a
    token is configured."""
    try:
        if ipaddress.ip_address(client_host or "").is_loopback:
            return True
    except ValueError:
        pass
    if not token:
        return False
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


def in_process() -> bool:
    """This process keeps its values in memory (not in the multiprocess directory)."""
    return values.ValueClass is values.MutexValue


class Merged(Collector):
    """The values of every process writing into the multiprocess directory and, when this
    process keeps its own in memory, those too, as one family per name: samples with the
    same name and labels (a counter counted in two places) are added up."""

    def __init__(self, folder: str | None, own: Iterable[Collector] = ()) -> None:
        self._folder = folder
        self._own = list(own)

    def collect(self) -> Iterable[Metric]:
        sources: list[Collector] = list(self._own)
        if self._folder and os.path.isdir(self._folder):
            sources.append(MultiProcessCollector(None, path=self._folder))  # type: ignore[no-untyped-call]
        families: dict[str, Metric] = {}
        sums: dict[tuple[str, str, tuple[tuple[str, str], ...]], int] = {}
        for source in sources:
            for family in source.collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type, family.unit
                    )
                for sample in family.samples:
                    key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                    at = sums.get(key)
                    if at is None:
                        sums[key] = len(merged.samples)
                        merged.samples.append(sample)
                    else:
                        old = merged.samples[at]
                        merged.samples[at] = old._replace(value=old.value + sample.value)
        return list(families.values())


def recorded() -> Merged:
    """What the platform's processes recorded: the multiprocess directory named by the
    environment, plus this process's own values when it keeps them in memory."""
    own = [REGISTRY] if in_process() else []
    return Merged(os.environ.get(MULTIPROC_ENV), own)
