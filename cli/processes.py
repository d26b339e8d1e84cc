"""The `hotline` commands that start processes: the embedded all-in-one `run` (the web
server, a Celery worker with beat and the SIP edge under one supervisor) and the production
processes `web`, `worker`, `beat` and `sip`, one command each.

Domain modules are imported inside the commands that need them, so that `--help` stays fast.
"""

from __future__ import annotations

import hmac
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from cli.common import _safe_url, _session, fail, friendly_errors
from cli.supervisor import Child, start, stop_all, supervise
from core import metrics
from core.clock import Clock, SystemClock
from core.db import make_engine, make_session_factory
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


@processes_app.command("run")
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
    users, first_start = _seed_once(settings, SystemClock())

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
    typer.echo("  Ctrl-C stops everything.")
    typer.echo("")
    children: list[Child] = []
    os.environ.update(metrics.multiproc_env(settings))  # before any child starts: core.metrics
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


@processes_app.command("web")
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
            "--timeout-graceful-shutdown",
            str(WEB_GRACEFUL_S),
        ]
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


def _drain(edge: Any, prompts: Any, *, timeout_s: float, hard_stop: Any) -> None:
    """Stops new calls at ``edge`` and waits up to ``timeout_s`` for the live ones to end;
    those still live then hear the apology and are hung up (their records are written by
    the normal end of a call). ``hard_stop`` set (a second signal) cuts the wait short."""
    import threading
    import time

    from telephony.flows import apologise

    edge.drain()
    deadline = time.monotonic() + timeout_s
    while edge.live_calls and time.monotonic() < deadline:
        if hard_stop.wait(0.2):
            return
    calls = edge.calls()
    if not calls:
        return
    typer.echo(f"{len(calls)} call(s) still live after {timeout_s:g} s: apologising")
    threads = [
        threading.Thread(target=apologise, args=(call,), kwargs={"prompts": prompts}, daemon=True)
        for call in calls
    ]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        if hard_stop.wait(0.2):
            return


@processes_app.command("sip")
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
    from accounts.privacy import mask_logs

    mask_logs()  # no caller's number in clear in the log, the SIP edge's lines included

    from datetime import timedelta

    from asr.recognizer import AsrError
    from hotline.calls import recovery, setup
    from hotline.calls.dialer import CallbackDialer
    from hotline.calls.keys import known_call_key
    from hotline.calls.seats import DbSeatStore
    from hotline.calls.services import CallServices, send_transcription_task
    from telephony.flows import serve_inbound
    from telephony.prompts import PromptError
    from telephony.sip_config import SipConfig, SipLine
    from telephony.sip_edge import SipEdge

    settings = get_settings()
    t = settings.telephony
    try:
        prompts = setup.prompt_set(settings)
        made = prompts.ensure()
        recognizer = setup.live_recognizer(settings)
        recognizer.load()  # the decoder processes start and load the model
        engine = make_engine(settings.db_url)
        session_factory, clock = make_session_factory(engine), SystemClock()
        # This process's identity: in its edge row (crash recovery) and in every seat
        # binding the registrar writes (which edge a phone registered with).
        me = recovery.EdgeIdentity.new(socket.gethostname())
        acd = settings.acd
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
                call_key_known=known_call_key(session_factory),
                # Operators' phones register here (digest auth, bindings in the database);
                # without seats REGISTER is answered 405 as before.
                seats=DbSeatStore(session_factory) if acd.enabled else None,
                seat_realm=acd.realm,
                register_min_expires=acd.register_min_expires,
                register_max_expires=acd.register_max_expires,
                digest_algorithms=tuple(acd.digest_algorithms),
                # The same on every edge of a deployment, so that they accept each other's
                # nonces; derived, so that the secret key itself never goes into SIP.
                registrar_secret=hmac.new(
                    settings.secret_key.encode(), b"sip-registrar-nonce", "sha256"
                ).hexdigest(),
                edge_id=me.id,
            )
        )
    except (PromptError, AsrError, ValueError) as exc:
        fail(str(exc))
    # Crash recovery: this process's own row and heartbeat, and before any call is answered
    # the calls a predecessor on this host (or any edge gone silent) left open are closed.
    recovery.register_edge(session_factory, edge=me, now=clock.now())
    try:
        from core import bell as doorbell

        closed = recovery.recover_calls(
            session_factory,
            now=clock.now(),
            stale_after=timedelta(seconds=t.edge_stale_after_s),
            enqueue_transcription=send_transcription_task,
            this_edge=me,
            # operators freed from a lost call wrap up as after any call, and the other
            # edges' queues hear of it
            wrap_up_s=settings.acd.wrap_up_s,
            bell=doorbell.for_settings(settings) if settings.acd.enabled else None,
        )
    except Exception:  # the beat's sweep tries again every minute
        logging.getLogger(__name__).exception("recovering the calls of lost SIP edges failed")
        closed = []
    from dispatch import classifier

    classifier.watch(settings.data_dir / classifier.MODEL_FILE)  # calls routed here get it too
    services = CallServices(
        session_factory=session_factory,
        clock=clock,
        settings=settings,
        recognizer=recognizer,
        edge_id=me.id,
    )
    flow = setup.flow_settings(settings)
    # Operators' seats: the queue (ACD) rings the longest-idle ready operator's phone and
    # bridges the call; with nobody signed in calls go to the voice-intake robot as before.
    operators: Any = None
    acd_engine: Any = None
    control: Any = None
    handler: Any
    if settings.acd.enabled:
        from core import bell as doorbell
        from hotline.calls.agent_pool import DbAgentPool
        from hotline.calls.control_runner import CallControl
        from hotline.calls.operators import OperatorCalls, call_handler
        from hotline.calls.reconciler import start_reconciler
        from telephony.acd import Acd, AcdConfig
        from telephony.acd_dial import DialRinger
        from telephony.queue_flow import QueueSettings

        bell = doorbell.for_settings(settings)
        pool = DbAgentPool(
            session_factory, clock=clock, wrap_up_s=settings.acd.wrap_up_s, bell=bell
        )
        operators = OperatorCalls(services, settings=settings)
        control = CallControl(
            session_factory,
            clock,
            dial=edge.dial,
            seat_target=edge.seat_target,
            outside_uri=settings.acd.outside_uri or t.callback_uri,
            wrap_up_s=settings.acd.wrap_up_s,
            ring_timeout_s=settings.acd.transfer_ring_timeout_s,
            bell=bell,
        )
        ringer = DialRinger(dial=edge.dial, target_of=edge.seat_target, acd=lambda: acd_engine)
        acd_engine = Acd(
            pool=pool,
            ringer=ringer,
            config=AcdConfig.from_settings(settings.acd),
            on_result=operators.on_result,
        )
        handler = call_handler(
            services=services,
            operators=operators,
            acd=acd_engine,
            pool=pool,
            prompts=prompts,
            flow=flow,
            queue_settings=QueueSettings.from_settings(settings.acd),
            control=control,
        )
        control.start()
        pool.watch(acd_engine.wake)  # an operator ready in any process: offered at once
        acd_engine.start()
        # Stuck states (an operator held by a call long gone, a wrap-up nobody ends, a
        # caller the queue still shows): compared with the calls that exist and repaired.
        reconciler = start_reconciler(
            session_factory,
            settings=settings,
            clock=clock,
            engine=acd_engine,
            edge=edge,
            edge_id=me.id,
            bell=bell,
        )
    else:
        handler = partial(serve_inbound, prompts=prompts, hooks=services.hooks(), settings=flow)
    stop = threading.Event()
    recovery.Heartbeat(
        session_factory, edge_id=me.id, clock=clock, interval_s=t.edge_heartbeat_s, stop=stop
    ).start()
    # The first SIGTERM/SIGINT drains the edge (no new calls, the live ones end or hear an
    # apology); a second one during the drain stops at once.
    draining, hard_stop = threading.Event(), threading.Event()

    def on_signal(*_: object) -> None:
        if draining.is_set():
            hard_stop.set()
        draining.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            edge.start(on_call=handler, on_ended=services.on_ended)
        except OSError as exc:
            fail(f"cannot listen for SIP on {t.host}:{t.port}: {exc}")
        host, port = edge.address
        typer.echo(
            f"SIP edge listening on {host}:{port} ({t.mode}); point a softphone at "
            f"{_softphone_line(settings)}"
        )
        typer.echo(f"  prompts:    {prompts.directory} ({len(made)} generated)")
        typer.echo(f"  recordings: {settings.recording_dir}")
        typer.echo(f"  edge:       {me.id} ({len(closed)} lost call(s) recovered)")
        if t.callback_uri:
            dialer = CallbackDialer(services=services, endpoint=edge, prompts=prompts, flow=flow)
            # No callback is claimed or dialled once the drain begins (a survey under way
            # is a live call: it may finish within the drain timeout).
            threading.Thread(
                target=dialer.run, args=(draining,), name="callbacks", daemon=True
            ).start()
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
        while not draining.wait(1.0):
            pass
        typer.echo(f"draining the SIP edge: new calls get 503, {edge.live_calls} call(s) live")
        _drain(edge, prompts, timeout_s=t.drain_timeout_s, hard_stop=hard_stop)
        typer.echo("stopping the SIP edge")
    finally:
        stop.set()
        draining.set()  # the callback dialer's stop, also when leaving on an error
        if control is not None:
            control.stop()
        if acd_engine is not None:
            reconciler.stop()
            acd_engine.stop()
        edge.stop()
        if operators is not None:
            operators.close()
        services.close()
        recovery.mark_stopped(session_factory, edge_id=me.id, now=clock.now())
        if hasattr(recognizer, "close"):
            recognizer.close()
        engine.dispose()
        for signum, previous_handler in previous.items():
            signal.signal(signum, previous_handler)
