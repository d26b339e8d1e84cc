"""`hotline metrics`: a worker or SIP host's exporter serves what that host's processes
wrote into the multiprocess directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from core.metrics import MULTIPROC_ENV
from tests.conftest import wait_until
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]


def _record_in_a_worker_process(folder: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from core import metrics\n"
            "metrics.ESCALATIONS_FIRED.inc(3)\n"
            "metrics.ASR_LIVE_LAG_SECONDS.observe(0.4)\n",
        ],
        env={**os.environ, MULTIPROC_ENV: str(folder)},
        cwd=ROOT,
        check=True,
        timeout=60,
    )


def test_the_exporter_serves_the_hosts_processes_metrics(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    _record_in_a_worker_process(folder)
    port = free_port()
    exporter = subprocess.Popen(
        [sys.executable, "-m", "cli", "metrics", "--port", str(port)],
        env={**os.environ, MULTIPROC_ENV: str(folder), "HOTLINE_DATA_DIR": str(tmp_path)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def answered() -> httpx.Response | None:
        try:
            return httpx.get(f"{url}/metrics", timeout=2)
        except httpx.TransportError:
            return None

    try:
        response = wait_until(answered, timeout=30, message="the exporter answering")
        assert isinstance(response, httpx.Response) and response.status_code == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }
        assert samples[("hotline_escalations_fired_total", ())] == 3
        assert samples[("hotline_asr_live_lag_seconds_count", ())] == 1
        _record_in_a_worker_process(folder)  # values move with the next scrape
        again = httpx.get(f"{url}/metrics", timeout=2).text
        assert "hotline_escalations_fired_total 6.0" in again
        assert httpx.get(f"{url}/other", timeout=2).status_code == 404
    finally:
        exporter.terminate()
        exporter.wait(10)


def test_the_exporter_refuses_to_start_without_a_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "cli", "metrics", "--port", str(free_port())],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "PROMETHEUS_MULTIPROC_DIR must name the directory" in result.stderr
