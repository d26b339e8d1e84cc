"""`hotline metrics`: this host's Prometheus exporter for the processes that serve no HTTP.

The web's ``/metrics`` adds up what every process writes into the multiprocess directory
(core.metrics), which works where they share a host — ``hotline run``, or a box running
web, worker and SIP edge together. A worker host or a SIP host of a larger installation
has no web process: run this beside its worker or edge, with the same
``PROMETHEUS_MULTIPROC_DIR``, and scrape it as a target of its own. It serves only what the
processes recorded (sweep duration, escalations fired, live ASR lag); the figures read
from the database come from the web's ``/metrics``. Same access rule as the web's: loopback,
or ``Authorization: Bearer <HOTLINE_WEB__METRICS_TOKEN>``.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from cli.common import fail, friendly_errors
from core.settings import get_settings

metrics_app = typer.Typer()

DEFAULT_PORT = 9464  # clear of the web (8000) and of the node exporter (9100)


@metrics_app.command("metrics")
@friendly_errors
def metrics_exporter(
    port: Annotated[int, typer.Option(help="port to serve /metrics on")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """Serve the metrics of this host's worker and SIP processes (their multiprocess
    directory, PROMETHEUS_MULTIPROC_DIR) at http://HOST:PORT/metrics."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.exposition import ThreadingWSGIServer

    from core import metrics

    settings = get_settings()
    folder = os.environ.get(metrics.MULTIPROC_ENV)
    if not folder or not os.path.isdir(folder):
        fail(
            f"{metrics.MULTIPROC_ENV} must name the directory this host's worker and SIP "
            "processes write their metrics to (set it for them and for this command)"
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.Merged(folder))
    token = settings.web.metrics_token

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"only /metrics here\n"]
        if not metrics.allowed(
            environ.get("REMOTE_ADDR"), environ.get("HTTP_AUTHORIZATION"), token
        ):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")],
            )
            return [b"/metrics needs a bearer token from here\n"]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [generate_latest(registry)]

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # a scrape every 15 s
            pass

    with make_server(host, port, app, ThreadingWSGIServer, handler_class=Quiet) as server:
        typer.echo(f"serving {folder} at http://{host}:{server.server_port}/metrics")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
