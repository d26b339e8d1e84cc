"""deploy/nginx/hotline.conf run by a real nginx (`nginx -t`, then live on loopback ports)
with a self-signed certificate, in front of a real uvicorn serving the platform: a page
loads over TLS, a call's live transcript event arrives through nginx while the stream is
still open, /metrics stays inside, and bodies no form can be are refused at the door."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from core.clock import FrozenClock
from core.db import session_scope
from hotline.calls import records
from telephony.endpoint import CallDirection
from telephony.models import CallRecord
from tests import services
from tests.conftest import START, wait_until
from tests.web.browser import Site, serve

SITE = Path(__file__).parents[2] / "deploy" / "nginx" / "hotline.conf"


def nginx() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    assert found, "nginx is missing: apt-get install nginx-light"
    return found


def site_config(tmp: Path, *, web_port: int, http_port: int, https_port: int) -> Path:
    """The shipped site with only what a test must change: its ports, the certificate, and
    the upstream's processes (both lines to the one uvicorn)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    text = SITE.read_text("utf-8")
    text = re.sub(r"server 127\.0\.0\.1:800\d", f"server 127.0.0.1:{web_port}", text)
    text = text.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    text = text.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    text = re.sub(r"\n\s*listen \[::\]:\d+[^;]*;", "", text)
    text = text.replace("/etc/hotline/tls/fullchain.pem", str(tmp / "cert.pem"))
    text = text.replace("/etc/hotline/tls/privkey.pem", str(tmp / "key.pem"))
    (tmp / "hotline.conf").write_text(text, "utf-8")
    user = "user root;\n" if os.geteuid() == 0 else ""  # pytest's tmp dirs are 0700
    main = tmp / "nginx.conf"
    main.write_text(
        f"{user}daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/error.log warn;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp}/body;\n"
        f"  proxy_temp_path {tmp}/proxy;\n  fastcgi_temp_path {tmp}/fcgi;\n"
        f"  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n"
        f"  gzip on;\n  gzip_types text/event-stream text/css application/json;\n"
        f"  include {tmp}/hotline.conf;\n}}\n",
        "utf-8",
    )
    return main


@contextmanager
def running_nginx(config: Path, https_port: int) -> Iterator[None]:
    process = subprocess.Popen(
        [nginx(), "-c", str(config), "-e", str(config.parent / "error.log")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: services.port_open("127.0.0.1", https_port), message="nginx listens")
        yield
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def site(tmp_path) -> Iterator[Site]:
    with serve(f"sqlite:///{tmp_path / 'web.db'}", tmp_path / "data", FrozenClock(START)) as s:
        yield s


def test_given_the_site_when_nginx_checks_it_then_it_is_valid(tmp_path):
    config = site_config(tmp_path, web_port=8001, http_port=1, https_port=2)

    result = subprocess.run(
        [nginx(), "-t", "-c", str(config), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


def test_given_nginx_in_front_of_uvicorn_then_pages_sse_and_limits_work(
    site: Site, tmp_path: Path
) -> None:
    web_port = int(site.url.rsplit(":", 1)[1])
    http_port, https_port = services.free_port(), services.free_port()
    config = site_config(tmp_path, web_port=web_port, http_port=http_port, https_port=https_port)
    front = f"https://127.0.0.1:{https_port}"
    call_id = "nginx-live@hotline.test"
    with session_scope(site.session_factory) as session:
        session.add(
            CallRecord(
                call_id=call_id,
                direction=CallDirection.INBOUND,
                arrived_at=START,
                answered_at=START,
                created_at=START,
                updated_at=START,
            )
        )

    # 30 s: a CI run on 2 busy cores once took over 10 s to pass the first request through
    # (the site cold, the other worker's browser tests running); a hung proxy still fails.
    with running_nginx(config, https_port), httpx.Client(verify=False, timeout=30) as client:
        # plain HTTP is sent to HTTPS
        moved = client.get(f"http://127.0.0.1:{http_port}/public/", follow_redirects=False)
        assert moved.status_code == 301
        assert moved.headers["location"].startswith("https://")

        # uvicorn's redirect names https and the site's host: the proxy headers are read
        redirect = client.get(f"{front}/public/", follow_redirects=False)
        assert redirect.status_code == 307
        assert redirect.headers["location"] == f"{front}/public"
        page = client.get(redirect.headers["location"], follow_redirects=True)
        assert page.status_code == 200 and str(page.url).startswith(front)
        assert "<html" in page.text and "12345" in page.text

        # A partial transcript written after the stream opened arrives while the stream
        # is still open (it closes only with the final transcript or its timeout).
        token = site.token("operator")
        got: list[str] = []
        with client.stream(
            "GET",
            f"{front}/api/v1/calls/{call_id}/transcript/stream?timeout_s=30",
            headers={"Authorization": f"Bearer {token}"},
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in stream.headers  # not gzipped, not held back

            # the stream is open (its headers came through): the caller speaks now
            with session_scope(site.session_factory) as session:
                records.set_live_text(session, call_id=call_id, text="小区停水了", now=START)
            opened = time.monotonic()
            for line in stream.iter_lines():
                got.append(line)
                if line.startswith("data:") and "小区停水了" in line:
                    break
            waited = time.monotonic() - opened
        assert any(line == "event: partial" for line in got), got
        assert waited < 5, f"the event took {waited:.1f} s through nginx"

        # /metrics: answered to loopback by the web process itself, not through the site
        assert httpx.get(f"{site.url}/metrics").status_code == 200
        assert client.get(f"{front}/metrics").status_code == 404

        # a body no form can be is refused by nginx before the web reads it
        too_big = client.post(f"{front}/public/new", content=b"x" * (17 * 1024 * 1024))
        assert too_big.status_code == 413
