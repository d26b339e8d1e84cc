"""core.metrics: the multiprocess directory a supervisor hands its children, and the one
view of what every process recorded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from core import metrics
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_childrens_directory_is_under_the_data_dir_and_starts_empty(tmp_path):
    settings = Settings(environment="development", data_dir=tmp_path / "var")
    folder = tmp_path / "var" / "metrics"
    folder.mkdir(parents=True)
    (folder / "counter_4242.db").write_bytes(b"last run's counts")
    env = metrics.multiproc_env(settings)
    assert env == {metrics.MULTIPROC_ENV: str(folder.resolve())}
    assert folder.is_dir() and list(folder.iterdir()) == []


def _count_in_child(folder: Path, times: int) -> None:
    code = (
        "import sys\n"
        "from core import metrics\n"
        "assert not metrics.in_process()\n"
        "metrics.ESCALATIONS_FIRED.inc(int(sys.argv[1]))\n"
        "metrics.SLA_SWEEP_SECONDS.observe(0.3)\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(times)],
        env={"PATH": "/usr/bin:/bin", metrics.MULTIPROC_ENV: str(folder)},
        cwd=ROOT,
        check=True,
        timeout=60,
    )


def _samples(collector) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_what_several_processes_recorded_is_added_up_with_this_ones_own(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    _count_in_child(folder, 3)
    _count_in_child(folder, 4)
    assert len(list(folder.glob("*.db"))) >= 2  # one file per process and kind
    own = CollectorRegistry()
    Counter("hotline_escalations_fired", "doc", registry=own).inc(5)
    samples = _samples(metrics.Merged(str(folder), [own]))
    assert samples[("hotline_escalations_fired_total", ())] == 12
    assert samples[("hotline_sla_sweep_duration_seconds_count", ())] == 2
    assert samples[("hotline_sla_sweep_duration_seconds_bucket", (("le", "0.5"),))] == 2
    assert samples[("hotline_sla_sweep_duration_seconds_bucket", (("le", "0.25"),))] == 0


def test_without_a_directory_only_this_process_counts(tmp_path):
    own = CollectorRegistry()
    Counter("hotline_escalations_fired", "doc", registry=own).inc(2)
    missing = str(tmp_path / "never-made")
    assert _samples(metrics.Merged(missing, [own]))[("hotline_escalations_fired_total", ())] == 2
    assert _samples(metrics.Merged(None, [own]))[("hotline_escalations_fired_total", ())] == 2


def test_scraping_is_open_to_loopback_and_elsewhere_needs_the_token():
    assert metrics.allowed("127.0.0.1", None, None)
    assert metrics.allowed("::1", None, "t0ken")
    assert not metrics.allowed("10.0.0.8", None, None)
    assert not metrics.allowed("10.0.0.8", "Bearer anything", None)
    assert not metrics.allowed("10.0.0.8", "Bearer wrong", "t0ken")
    assert not metrics.allowed("10.0.0.8", "Basic t0ken", "t0ken")
    assert metrics.allowed("10.0.0.8", "Bearer t0ken", "t0ken")
    assert metrics.allowed("10.0.0.8", "bearer  t0ken ", "t0ken")
    assert not metrics.allowed(None, None, None)
    assert not metrics.allowed("testclient", None, None)
