"""The `hotline` command: migrations, the embedded all-in-one `run`, the production
processes (web, worker, beat) and administration (users, rules, a manual SLA sweep).

Domain modules are imported inside the commands that need them, so that `hotline db upgrade`
works on a host where, say, the web stack is broken, and `--help` stays fast.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import pydantic
import sqlalchemy.exc
import typer
from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlmodel import Session

from cli.supervisor import Child, start, stop_all, supervise
from core.clock import Clock, SystemClock
from core.db import make_engine, make_session_factory, session_scope
from core.errors import DomainError
from core.settings import Settings, get_settings
from hotline import migrate

app = typer.Typer(
    help="12345 government service hotline platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
users_app = typer.Typer(help="Accounts and their bearer tokens.", no_args_is_help=True)
rules_app = typer.Typer(help="Dispatch rule packs.", no_args_is_help=True)
prompts_app = typer.Typer(help="Voice prompts of the phone menus.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(rules_app, name="rules")
app.add_typer(prompts_app, name="prompts")

F = TypeVar("F", bound=Callable[..., Any])

WORKER_APP = "hotline.worker:app"
WEB_FACTORY = "web.app:create_app"
SIP_ARGV = [sys.executable, "-m", "cli", "sip"]


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def friendly_errors(fn: F) -> F:
    """Expected failures — bad input, bad configuration, an unreachable or unmigrated
    database — end in one clear line and exit status 1. Anything else is a bug and keeps
    its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DomainError as exc:
            fail(exc.message)
        except pydantic.ValidationError as exc:
            problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            fail(f"invalid configuration: {problems}")
        except sqlalchemy.exc.ArgumentError as exc:
            fail(f"unusable database URL: {_first_line(exc)}")
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as exc:
            fail(
                f"database error: {_first_line(exc)} "
                "(is the database reachable and migrated? try `hotline db upgrade`)"
            )
        except CommandError as exc:
            fail(f"migration error: {exc}")

    return wrapper  # type: ignore[return-value]


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<unparseable URL>"


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.db_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, indent=2, default=str))


# ---------------------------------------------------------------- db


@db_app.command("upgrade")
@friendly_errors
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Apply the migrations to the configured database (HOTLINE_DATABASE_URL)."""
    settings = get_settings()
    migrate.upgrade(settings.db_url, revision)
    typer.echo(f"{_safe_url(settings.db_url)} is at revision {migrate.current(settings.db_url)}")


@db_app.command("current")
@friendly_errors
def db_current() -> None:
    """Show the database's revision and whether it is up to date."""
    settings = get_settings()
    current, head = migrate.current(settings.db_url), migrate.head()
    state = "up to date" if current == head else f"behind head {head}: run `hotline db upgrade`"
    typer.echo(f"{_safe_url(settings.db_url)}: revision {current or '(none)'} — {state}")


@db_app.command("revision")
@friendly_errors
def db_revision(
    message: Annotated[str, typer.Argument(help="what the migration does, e.g. 'add unit phone'")],
) -> None:
    """Developers: autogenerate the next migration from the models.

    The models are compared with a scratch SQLite database brought to head; review the
    generated file before committing it.
    """
    path = migrate.revision(message)
    typer.echo(f"wrote {path}; review it, then run the migration tests")


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
    """Working-day deadlines are counted wrongly for a year whose holidays nobody loaded:
    say so at start-up, for this year and the next."""
    from dispatch.policies import load_calendar

    this_year = clock.now().astimezone(settings.tz).year
    with _session(settings) as session:
        calendar = load_calendar(session, tz=settings.tz)
    return [
        f"the holidays of {year} are not loaded: working-day deadlines in {year} count "
        f"Monday to Friday only. Enter them with PUT /api/v1/calendar/days/{{day}} or "
        f"POST /api/v1/calendar/days/import"
        for year in (this_year, this_year + 1)
        if not calendar.year(year).known
    ]


def _seed_once(settings: Settings, clock: Clock) -> list[dict[str, Any]]:
    """Seed the demo city on first start. Tokens exist only when users are created (only
    hashes are stored), so they are kept in the data dir for later starts to show again."""
    from hotline.seed import seed_demo

    tokens_file = _demo_users_path(settings)
    with _session(settings) as session:
        result = seed_demo(session=session, now=clock.now())
    if not result["seeded"]:
        return json.loads(tokens_file.read_text("utf-8")) if tokens_file.exists() else []
    users = result["users"]
    tokens_file.write_text(json.dumps(users, ensure_ascii=False, indent=1), "utf-8")
    tokens_file.chmod(0o600)
    return users


@app.command("run")
@friendly_errors
def run() -> None:
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
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.db_url)
    users = _seed_once(settings, SystemClock())

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
    typer.echo("")
    typer.secho("12345 hotline is starting", bold=True)
    typer.echo(f"  database:  {_safe_url(settings.db_url)}")
    broker = _safe_url(settings.broker)
    if settings.broker_url is None:
        broker += f" (files in {settings.broker_folder})"
    typer.echo(f"  broker:    {broker}")
    for url in _browser_urls(settings):
        typer.echo(f"  browser:   {url}   API docs: {url}docs")
    typer.echo(f"  softphone: {_softphone_line(settings)}")
    if users:
        typer.echo("  demo users (send `Authorization: Bearer <token>`):")
        centre = [u for u in users if u["role"] != "handler"]
        _print_table(
            [
                ("   ", u["username"], u["role"], u.get("unit") or "", u["token"])
                for u in centre + [u for u in users if u["username"] == "water.handler"]
            ]
        )
        units = len({u.get("unit") for u in users if u["role"] == "handler"})
        typer.echo(
            f"  every unit ({units}) has <unit>.handler and <unit>.head users; all tokens "
            f"are in {_demo_users_path(settings)}"
        )
    else:
        typer.echo("  demo users: none recorded; mint one with `hotline users add`")
    for warning in _calendar_warnings(settings, SystemClock()):
        typer.secho(f"  warning: {warning}", fg=typer.colors.YELLOW)
    typer.echo("  Ctrl-C stops everything.")
    typer.echo("")
    children: list[Child] = []
    try:
        children.append(start("web server", web_argv))
        children.append(start("celery worker+beat", worker_argv))
        children.append(start("SIP edge", SIP_ARGV))
    except BaseException:
        stop_all(children)
        raise
    raise typer.Exit(supervise(children))


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


@app.command("web")
@friendly_errors
def web(
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
    host: Annotated[str | None, typer.Option(help="default: HOTLINE_WEB__HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: HOTLINE_WEB__PORT")] = None,
) -> None:
    """The API and pages only (production: run as many as needed behind a proxy)."""
    settings = get_settings()
    _exec(
        [
            sys.executable,
            "-m",
            "uvicorn",
            WEB_FACTORY,
            "--factory",
            "--host",
            host or settings.web.host,
            "--port",
            str(port or settings.web.port),
            "--workers",
            str(workers),
            "--proxy-headers",
        ]
    )


@app.command("worker")
@friendly_errors
def worker(
    concurrency: Annotated[int | None, typer.Option(help="default: the number of CPUs")] = None,
    queues: Annotated[str | None, typer.Option("-Q", "--queues", help="comma-separated")] = None,
) -> None:
    """A Celery worker on the configured broker (production: any number of them)."""
    settings = get_settings()
    _require_real_broker(settings)
    argv = [sys.executable, "-m", "celery", "-A", WORKER_APP, "worker", "-l", "info"]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if queues:
        argv += ["-Q", queues]
    _exec(argv)


@app.command("beat")
@friendly_errors
def beat() -> None:
    """The Celery beat scheduler (production: run exactly one)."""
    settings = get_settings()
    _require_real_broker(settings)
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


@app.command("sip")
@friendly_errors
def sip() -> None:
    """The SIP edge: answers calls into tickets (live or offline transcripts), tells ticket
    status by keypad, and dials the satisfaction callbacks. One per line/PBX trunk."""
    import logging
    import threading
    from functools import partial

    # A call's story (answered, ticket, live ASR full, transcribed, dispatched) is told in
    # these lines; without a handler only bare warnings would reach stderr.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    from asr.recognizer import AsrError
    from hotline.calls import setup
    from hotline.calls.dialer import CallbackDialer
    from hotline.calls.services import CallServices
    from telephony.flows import serve_inbound
    from telephony.prompts import PromptError
    from telephony.sip import SipConfig, SipEdge, SipLine

    settings = get_settings()
    t = settings.telephony
    try:
        prompts = setup.prompt_set(settings)
        made = prompts.ensure()
        recognizer = setup.live_recognizer(settings)
        recognizer.load()  # the decoder processes start and load the model
        edge = SipEdge(
            SipConfig(
                host=t.host,
                port=t.port,
                mode=t.mode,
                allow=tuple(t.allow),
                lines=tuple(SipLine(**line.model_dump()) for line in t.lines),
                advertised_host=_sip_host(settings)
                if t.host in ("0.0.0.0", "::")
                else t.advertised_host,
                rtp_low=t.rtp_low,
                rtp_high=t.rtp_high,
                rtp_latch=t.rtp_latch,
                max_calls=t.max_calls,
            )
        )
    except (PromptError, AsrError, ValueError) as exc:
        fail(str(exc))
    engine = make_engine(settings.db_url)
    services = CallServices(
        session_factory=make_session_factory(engine),
        clock=SystemClock(),
        settings=settings,
        recognizer=recognizer,
    )
    flow = setup.flow_settings(settings)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            edge.start(
                on_call=partial(
                    serve_inbound, prompts=prompts, hooks=services.hooks(), settings=flow
                ),
                on_ended=services.on_ended,
            )
        except OSError as exc:
            fail(f"cannot listen for SIP on {t.host}:{t.port}: {exc}")
        host, port = edge.address
        typer.echo(
            f"SIP edge listening on {host}:{port} ({t.mode}); point a softphone at "
            f"{_softphone_line(settings)}"
        )
        typer.echo(f"  prompts:    {prompts.directory} ({len(made)} generated)")
        typer.echo(f"  recordings: {settings.recording_dir}")
        if t.callback_uri:
            dialer = CallbackDialer(services=services, endpoint=edge, prompts=prompts, flow=flow)
            threading.Thread(target=dialer.run, args=(stop,), name="callbacks", daemon=True).start()
            typer.echo(f"  callbacks:  dialled as {t.callback_uri}")
        else:
            typer.echo("  callbacks:  off (set HOTLINE_TELEPHONY__CALLBACK_URI to dial them)")
        # Calls are answered meanwhile; one that comes first decodes on a fresh recognizer.
        threading.Thread(
            target=setup.warm_recognizers,
            args=(settings, recognizer, prompts, stop),
            name="asr-warm-up",
            daemon=True,
        ).start()
        while not stop.wait(1.0):
            pass
        typer.echo("stopping the SIP edge")
    finally:
        stop.set()
        edge.stop()
        services.close()
        if hasattr(recognizer, "close"):
            recognizer.close()
        engine.dispose()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@prompts_app.command("build")
@friendly_errors
def prompts_build(
    language: Annotated[
        str | None, typer.Option(help="default: HOTLINE_TELEPHONY__PROMPT_LANGUAGE")
    ] = None,
) -> None:
    """Synthesise the voice prompts that are missing or whose text changed."""
    from hotline.calls import setup
    from telephony.prompts import PromptError

    settings = get_settings()
    try:
        prompts = setup.prompt_set(settings, language=language)
        made = prompts.ensure()
    except PromptError as exc:
        fail(str(exc))
    typer.echo(
        f"{len(made)} prompt(s) generated in {prompts.directory}; "
        f"{len(prompts.texts) - len(made)} already up to date"
    )


# ---------------------------------------------------------------- users


@users_app.command("add")
@friendly_errors
def users_add(
    username: str,
    role: Annotated[str, typer.Option(help="operator|dispatcher|supervisor|handler|admin")],
    unit: Annotated[str | None, typer.Option(help="unit code (required for handlers)")] = None,
    name: Annotated[str | None, typer.Option(help="display name (default: USERNAME)")] = None,
    email: Annotated[str | None, typer.Option()] = None,
    head: Annotated[bool, typer.Option("--head", help="the unit's head (gets 督办)")] = False,
) -> None:
    """Create an account and print its bearer token — once; only a hash is stored."""
    from accounts.models import Role
    from dispatch import units as unit_service

    try:
        role_value = Role(role)
    except ValueError:
        fail(f"unknown role {role!r}; one of: {', '.join(r.value for r in Role)}")
    settings = get_settings()
    with _session(settings) as session:
        user, token = unit_service.create_user(
            session,
            username=username,
            display_name=name or username,
            role=role_value,
            unit_code=unit,
            email=email,
            is_head=head,
            now=SystemClock().now(),
        )
    typer.echo(f"created {user.username} ({user.role.value}{', ' + unit if unit else ''})")
    typer.echo(f"token: {token}")
    typer.echo("Store it now: it is not shown again (only its hash is kept).")


@users_app.command("list")
@friendly_errors
def users_list() -> None:
    """Every account, with role, unit and state."""
    from dispatch import units as unit_service

    settings = get_settings()
    with _session(settings) as session:
        users = unit_service.list_users(session)
        units = unit_service.units_by_id(session, [u.unit_id for u in users])
        rows = [
            (
                u.username,
                u.role.value,
                units[u.unit_id].code if u.unit_id else "",
                "head" if u.is_head else "",
                "active" if u.active else "inactive",
                u.display_name,
            )
            for u in users
        ]
    if not rows:
        typer.echo("no users yet: `hotline users add USERNAME --role admin`")
    _print_table(rows)


# ---------------------------------------------------------------- rules


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".json":
        return "json"
    fail(f"{path}: cannot tell the format from the extension; use .yaml, .yml or .json")


@rules_app.command("import")
@friendly_errors
def rules_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    replace: Annotated[bool, typer.Option(help="replace the rules of the pack(s) in FILE")] = False,
) -> None:
    """Load a rule pack (YAML or JSON)."""
    from dispatch import rulebook

    fmt = _format_of(file)
    settings = get_settings()
    with _session(settings) as session:
        result = rulebook.import_pack(
            session, text=file.read_text("utf-8"), fmt=fmt, now=SystemClock().now(), replace=replace
        )
    typer.echo(f"imported {file}")
    if result is not None:
        _print_json(result)


@rules_app.command("export")
@friendly_errors
def rules_export(
    pack: Annotated[str | None, typer.Option(help="only this pack (default: all)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="yaml or json")] = "yaml",
) -> None:
    """Print the rules as a pack that `hotline rules import` reads back."""
    from dispatch import rulebook

    if fmt not in ("yaml", "json"):
        fail("--format must be yaml or json")
    settings = get_settings()
    with _session(settings) as session:
        text = rulebook.export_pack(session, pack=pack, fmt=fmt)
    typer.echo(text.rstrip("\n"))


@rules_app.command("dry-run")
@friendly_errors
def rules_dry_run(
    text: Annotated[str, typer.Argument(help="what the caller said or wrote")],
    district: Annotated[str | None, typer.Option(help="e.g. 榆阳区")] = None,
    request_type: Annotated[str | None, typer.Option("--type", help="complaint, help, …")] = None,
) -> None:
    """Show which rules would fire for a ticket, and why, without creating anything."""
    from dispatch import rulebook
    from dispatch.rules import TicketFacts
    from tickets.models import RequestType

    try:
        kind = RequestType(request_type) if request_type else None
    except ValueError:
        fail(
            f"unknown request type {request_type!r}; one of: "
            f"{', '.join(t.value for t in RequestType)}"
        )
    settings = get_settings()
    with _session(settings) as session:
        outcome = rulebook.dry_run(
            session, facts=TicketFacts(text=text, district=district, request_type=kind)
        )
    _print_json(outcome)


# ---------------------------------------------------------------- SLA


@app.command("sweep")
@friendly_errors
def sweep() -> None:
    """Run one SLA sweep now: fire every warning and escalation that is due."""
    from dispatch import escalation
    from hotline.worker import app as celery_app

    def enqueue(notification_id: int) -> None:
        celery_app.send_task("dispatch.deliver_notification", args=[notification_id])

    settings = get_settings()
    engine = make_engine(settings.db_url)
    try:
        result = escalation.sweep(
            make_session_factory(engine),
            now=SystemClock().now(),
            batch=settings.sla.sweep_batch,
            enqueue=enqueue,
            settings=settings,
        )
    finally:
        engine.dispose()
    typer.echo(
        f"fired {result.fired} escalation step(s) on {result.assignments} assignment(s);"
        " their e-mails and webhooks are queued for the workers"
        + (
            f"; {result.failed} failed (see the log; the next sweep retries)"
            if result.failed
            else ""
        )
    )
    if result.failed:
        raise typer.Exit(1)
