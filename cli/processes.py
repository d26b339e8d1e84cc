"""The `hotline` commands that start processes: the embedded all-in-one `run` (the web
server, a Celery worker with beat and the SIP edge under one supervisor) and the production
processes `web`, `worker`, `beat` and `sip`, one command each.

Domain modules are imported inside the commands that need them, so that `--help` stays fast.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from cli.common import (
    ConfigError,
    _safe_url,
    _session,
    fail,
    friendly_errors,
    require_free_port,
)
from cli.supervisor import Child, start, stop_all, supervise
from core import logging_setup, metrics
from core.clock import Clock, SystemClock
from core.settings import Settings, get_settings
from hotline import migrate

# Added to the `hotline` app without a name: its commands are top-level ones.
processes_app = typer.Typer()

WORKER_APP = "hotline.worker:app"
WEB_FACTORY = "web.app:create_served_app"
WEB_GRACEFUL_S = 5  # seconds a stopping web process waits for open requests (live streams)
SIP_ARGV = [sys.executable, "-m", "cli", "sip"]


# ---------------------------------------------------------------- run (embedded default)


def _lan_ip() -> str:
    """The address other machines reach us on (no packet is sent: UDP connect only routes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def _browser_urls(settings: Settings) -> list[str]:
    if settings.web.public_url:
        return [settings.web.public_url.rstrip("/") + "/"]
    host, port = settings.web.host, settings.web.port
    if host in ("0.0.0.0", "::", ""):
        hosts = dict.fromkeys(["127.0.0.1", _lan_ip()])
        return [f"http://{h}:{port}/" for h in hosts]
    return [f"http://{host}:{port}/"]


def _sip_host(settings: Settings) -> str:
    """The address callers reach the SIP edge on."""
    t = settings.telephony
    if t.advertised_host:
        return t.advertised_host
    return _lan_ip() if t.host in ("0.0.0.0", "::", "") else t.host


def _softphone_line(settings: Settings) -> str:
    t = settings.telephony
    line = f"sip:12345@{_sip_host(settings)}:{t.port}"
    if all(net.startswith(("127.", "::1")) for net in t.allow):
        line += (
            " (only this machine may call; let your LAN in with e.g. "
            "HOTLINE_TELEPHONY__ALLOW='[\"192.168.0.0/16\"]')"
        )
    return line


def _demo_users_path(settings: Settings) -> Path:
    return settings.data_dir / "demo-users.json"


def _calendar_warnings(settings: Settings, clock: Clock) -> list[str]:
    """Working-day deadlines are counted wrongly for a year whose holidays nobody loaded,
    and only guessed for a year no administrator has confirmed: say so at start-up, for
    this year and the next (the next one from 1 December, when China has published it)."""
    from dispatch.calendar import confirmed_years, years_to_confirm
    from dispatch.policies import load_calendar

    today = clock.now().astimezone(settings.tz).date()
    with _session(settings) as session:
        calendar = load_calendar(session, tz=settings.tz)
        confirmed = confirmed_years(session)
    return [
        f"the holidays of {year} are not loaded: working-day deadlines in {year} count "
        f"Monday to Friday only. Enter them with PUT /api/v1/calendar/days/{{day}} or "
        f"POST /api/v1/calendar/days/import"
        for year in (today.year, today.year + 1)
        if not calendar.year(year).known
    ] + [
        f"the working calendar of {year} is not confirmed: its working-day deadlines are "
        f"counted from the best data there is and flagged on the pages; an administrator "
        f"confirms it at /admin/calendar once its holidays are checked"
        for year in years_to_confirm(today, confirmed)
    ]


def _seed_once(settings: Settings, clock: Clock) -> tuple[list[dict[str, Any]], bool]:
    """Seed the demo city on first start; the demo users and whether they were made just now.
    Passwords and tokens exist only when users are created (only hashes are stored), so
    they are kept in the data dir's 0600 file — and printed at the first start only."""
    from hotline.seed import seed_demo

    tokens_file = _demo_users_path(settings)
    with _session(settings) as session:
        result = seed_demo(session=session, now=clock.now())
    if not result["seeded"]:
        users = json.loads(tokens_file.read_text("utf-8")) if tokens_file.exists() else []
        return users, False
    users = result["users"]
    tokens_file.touch(mode=0o600)
    tokens_file.chmod(0o600)
    tokens_file.write_text(json.dumps(users, ensure_ascii=False, indent=1), "utf-8")
    return users, True


def check_model(settings: Settings) -> None:
    """The speech model's directory is there and looks loadable (cheap: loading is not)."""
    from asr.vosk_engine import check_model_layout
    from hotline.calls.setup import asr_config

    check_model_layout(asr_config(settings).resolved_model_path())


def _settings_for_run(host: str | None, port: int | None, sip_port: int | None) -> Settings:
    """The settings with the command line's addresses, put in the environment that the
    children (web server, SIP edge) read theirs from — with the data directory resolved
    here, once, so that they all use the one this command printed."""
    overrides = {
        "HOTLINE_WEB__HOST": host,
        "HOTLINE_TELEPHONY__HOST": host,
        "HOTLINE_WEB__PORT": None if port is None else str(port),
        "HOTLINE_TELEPHONY__PORT": None if sip_port is None else str(sip_port),
    }
    os.environ.update({name: value for name, value in overrides.items() if value is not None})
    get_settings.cache_clear()
    settings = get_settings()
    os.environ["HOTLINE_DATA_DIR"] = str(settings.data_dir)
    return settings


@processes_app.command("run")
@friendly_errors
def run(
    host: Annotated[
        str | None,
        typer.Option(
            help="address the web server and the SIP edge listen on "
            "(default: HOTLINE_WEB__HOST, HOTLINE_TELEPHONY__HOST)"
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="web port (default: HOTLINE_WEB__PORT, 8000)"),
    ] = None,
    sip_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="SIP port (default: HOTLINE_TELEPHONY__PORT, 5060)"),
    ] = None,
) -> None:
    """Everything in one process tree: the embedded default for trying and developing.

    SQLite, Celery on a local transport with embedded beat, demo data, the API and pages.
    Ctrl-C stops everything.
    """
    settings = get_settings()
    if settings.environment == "production":
        fail(
            "`hotline run` is the demo/development mode; in production run "
            "`hotline web`, `hotline worker` and `hotline beat` (see the README)"
        )
    settings = _settings_for_run(host, port, sip_port)
    # Whatever cannot work is refused before anything is created or started.
    require_free_port(settings.web.host, settings.web.port, variable="--port or HOTLINE_WEB__PORT")
    require_free_port(
        settings.telephony.host,
        settings.telephony.port,
        variable="--sip-port or HOTLINE_TELEPHONY__PORT",
        udp=True,
    )
    check_model(settings)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data directory {settings.data_dir} (HOTLINE_DATA_DIR): "
            f"{exc.strerror or exc}"
        ) from None
    migrate.upgrade(settings.db_url)

    web_argv = [
        sys.executable,
        "-m",
        "uvicorn",
        WEB_FACTORY,
        "--factory",
        "--host",
        settings.web.host,
        "--port",
        str(settings.web.port),
        # Open live streams (every tab keeps one) would hold a stop for ever: after this
        # long they are cut, and the browsers reconnect to whatever web process is next.
        "--timeout-graceful-shutdown",
        str(WEB_GRACEFUL_S),
        "--log-config",
        str(logging_setup.UVICORN_LOG_CONFIG),
    ]
    worker_argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        WORKER_APP,
        "worker",
        "-B",
        "--pool=threads",
        "--concurrency=2",
        "-l",
        "info",
        "--schedule",
        str((settings.data_dir / "celerybeat-schedule").resolve()),
    ]
    children: list[Child] = []
    os.environ.update(metrics.multiproc_env(settings))  # before any child starts: core.metrics
    # A stop while the platform is still starting stops what has started (the children run
    # in sessions of their own: nobody else would).
    signal.signal(signal.SIGTERM, _stop_starting)
    try:
        # The web server first: a first start is waited for at the browser, and seeding the
        # demo city here, the worker's start and the SIP edge's (its first prompts, the speech
        # model in every decoder) would otherwise take the CPU its start needs.
        children.append(start("web server", web_argv))
        users, first_start = _seed_once(settings, SystemClock())
        _banner(settings, users, first_start)
        children.append(start("celery worker+beat", worker_argv))
        _wait_until_listening(settings, children[0], timeout_s=WEB_START_WAIT_S)
        children.append(start("SIP edge", SIP_ARGV))
    except BaseException:
        stop_all(children)
        raise
    raise typer.Exit(supervise(children))


def _stop_starting(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


# How long the SIP edge waits for the web server to listen before it starts anyway.
WEB_START_WAIT_S = 60.0


def _wait_until_listening(settings: Settings, web: Child, *, timeout_s: float) -> None:
    """Until the web server accepts connections, it exits (the supervisor then says so), or
    `timeout_s` passes."""
    host = settings.web.host
    if host in ("", "0.0.0.0", "::"):
        host = "::1" if host == "::" else "127.0.0.1"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and web.proc.poll() is None:
        try:
            with socket.create_connection((host, settings.web.port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)


def _banner(settings: Settings, users: list[dict[str, Any]], first_start: bool) -> None:
    """Where the platform is, who may sign in, and what needs an administrator."""
    typer.echo("")
    typer.secho("12345 hotline is starting", bold=True)
    typer.echo(f"  data:      {settings.data_dir}")
    typer.echo(f"  database:  {_safe_url(settings.db_url)}")
    broker = _safe_url(settings.broker)
    if settings.broker_url is None:
        broker += f" (files in {settings.broker_folder})"
    typer.echo(f"  broker:    {broker}")
    for url in _browser_urls(settings):
        typer.echo(f"  browser:   {url}   API docs: {url}docs")
    typer.echo(f"  softphone: {_softphone_line(settings)}")
    demo_file = _demo_users_path(settings)
    if users and first_start:
        admin = next((u for u in users if u["role"] == "admin"), None)
        demo = next((u for u in users if u["role"] != "admin" and u.get("password")), None)
        typer.echo("  sign in to the pages (shown this once; kept in the file below):")
        if admin and admin.get("password"):
            typer.echo(f"    admin                 password {admin['password']}")
        if demo:
            typer.echo(
                "    operator, dispatcher, supervisor, <unit>.handler, <unit>.head   "
                f"password {demo['password']}"
            )
        units = len({u.get("unit") for u in users if u["role"] == "handler"})
        typer.echo(
            f"  {len(users)} demo users ({units} units); their passwords and API tokens: "
            f"{demo_file}"
        )
    elif users:
        typer.echo(
            f"  demo users: passwords and API tokens in {demo_file} "
            "(`hotline users password NAME` resets one)"
        )
    else:
        typer.echo("  demo users: none recorded; create one with `hotline users add`")
    for warning in _calendar_warnings(settings, SystemClock()):
        typer.secho(f"  warning: {warning}", fg=typer.colors.YELLOW)
    if os.geteuid() == 0:
        typer.secho(f"  warning: {ROOT_WARNING}", fg=typer.colors.YELLOW)
    typer.echo("  Ctrl-C stops everything.")
    typer.echo("")


# ---------------------------------------------------------------- production processes


def _exec(argv: list[str]) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def _require_real_broker(settings: Settings) -> None:
    if settings.environment == "production" and settings.broker_url is None:
        fail(
            "HOTLINE_BROKER_URL is not set: production workers and beat need Redis, "
            "e.g. redis://127.0.0.1:6379/0"
        )


@processes_app.command("web")
@friendly_errors
def web(
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
    host: Annotated[str | None, typer.Option(help="default: HOTLINE_WEB__HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: HOTLINE_WEB__PORT")] = None,
) -> None:
    """The API and pages only (production: run as many as needed behind a proxy)."""
    settings = get_settings()
    host, port = host or settings.web.host, port or settings.web.port
    require_free_port(host, port, variable="--port or HOTLINE_WEB__PORT")
    _exec(
        [
            sys.executable,
            "-m",
            "uvicorn",
            WEB_FACTORY,
            "--factory",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--proxy-headers",
            "--timeout-graceful-shutdown",
            str(WEB_GRACEFUL_S),
            "--log-config",
            str(logging_setup.UVICORN_LOG_CONFIG),
        ]
    )


ROOT_WARNING = (
    "running as root (Celery's SecurityWarning below says the same): a task could do "
    "anything to this machine. Give the data directory to an unprivileged user "
    "(`./scripts/run` makes the system user `hotline` and does it) and root's `hotline` "
    "commands run as that user; production refuses root"
)


def _refuse_root_in_production(settings: Settings, command: str) -> None:
    """Celery warns that a root worker "is absolutely not recommended" — a task running
    as root can do anything to the host. Production refuses it; trying the platform in a
    container as root (`hotline run`, development) keeps Celery's warning."""
    if settings.environment == "production" and os.geteuid() == 0:
        fail(
            f"`hotline {command}` must not run as root in production: run it as an "
            "unprivileged user that owns HOTLINE_DATA_DIR (User= in its systemd unit)"
        )


@processes_app.command("worker")
@friendly_errors
def worker(
    concurrency: Annotated[int | None, typer.Option(help="default: the number of CPUs")] = None,
    queues: Annotated[str | None, typer.Option("-Q", "--queues", help="comma-separated")] = None,
) -> None:
    """A Celery worker on the configured broker (production: any number of them)."""
    settings = get_settings()
    _require_real_broker(settings)
    _refuse_root_in_production(settings, "worker")
    argv = [sys.executable, "-m", "celery", "-A", WORKER_APP, "worker", "-l", "info"]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if queues:
        argv += ["-Q", queues]
    _exec(argv)


@processes_app.command("beat")
@friendly_errors
def beat() -> None:
    """The Celery beat scheduler (production: run exactly one)."""
    settings = get_settings()
    _require_real_broker(settings)
    _refuse_root_in_production(settings, "beat")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _exec(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            WORKER_APP,
            "beat",
            "-l",
            "info",
            "--schedule",
            str((settings.data_dir / "celerybeat-schedule").resolve()),
        ]
    )
