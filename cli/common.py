"""What every `hotline` command shares: expected failures — bad input, bad configuration, an
unreachable, missing or unmigrated database, a port in use — end in one `error: …` line
naming the setting to change and exit status 1 instead of a traceback; a session on the
configured database, and table output.

The translation of failures into that line is `config_error`, in one place: the entry of the
`hotline` program (`Hotline.__call__`) and the commands' `friendly_errors` both use it.
`require_database` is the other gate every command passes (`preflight`, the app's callback):
commands that work on the centre's data refuse a database that is not there or not at the
head revision instead of creating an empty one where they happen to be started."""

from __future__ import annotations

import functools
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import pydantic
import sqlalchemy.exc
import typer
from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlmodel import Session

from core.db import make_engine, make_session_factory, session_scope
from core.errors import DomainError
from core.settings import Settings, get_settings

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


class ConfigError(Exception):
    """A setting that cannot work as configured; the message names its variable."""


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def env_name(loc: Sequence[int | str]) -> str:
    """The environment variable of a settings field: ("web", "port") -> HOTLINE_WEB__PORT."""
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            break  # an item of a list: the variable is the list's
        parts.append(str(part).upper())
    return "HOTLINE_" + "__".join(parts) if parts else "HOTLINE_*"


def _validation_problems(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        # Model-wide checks name their variables in the message themselves.
        problems.append(f"{env_name(error['loc'])}: {message}" if error["loc"] else message)
    return "; ".join(problems)


def _database_target() -> str:
    try:
        return _safe_url(get_settings().db_url)
    except Exception:  # the settings themselves are what is broken
        return "the database"


def config_error(exc: BaseException) -> str | None:
    """The one line an expected failure ends in, or None for a bug (it keeps its traceback)."""
    from asr.recognizer import AsrError

    if isinstance(exc, DomainError):
        return exc.message
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, pydantic.ValidationError):
        return f"invalid configuration: {_validation_problems(exc)}"
    if isinstance(exc, sqlalchemy.exc.ArgumentError):
        return f"unusable database URL in HOTLINE_DATABASE_URL: {_first_line(exc)}"
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.ProgrammingError):
        return (
            f"database error: {_first_line(exc)} (is {_database_target()} reachable and "
            "migrated? check HOTLINE_DATABASE_URL, try `hotline db upgrade`)"
        )
    if isinstance(exc, CommandError):
        return f"migration error: {exc}"
    if isinstance(exc, AsrError):
        variable = "HOTLINE_ASR__MODEL_PATH" if "model" in str(exc) else "HOTLINE_ASR__*"
        return f"speech recognition: {exc} (check {variable})"
    return None


def friendly_errors(fn: F) -> F:
    """Expected failures end in one clear line and exit status 1 (`config_error`). Anything
    else is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            message = config_error(exc)
            if message is None:
                raise
            fail(message)

    return wrapper  # type: ignore[return-value]


class Hotline(typer.Typer):
    """The `hotline` program: whatever escapes a command — a setting refused while the
    command line is still being read, say — is translated at the entry by `config_error`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            message = config_error(exc)
            if message is None:
                raise
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            sys.exit(1)


# ---------------------------------------------------------------- the centre's database

# The commands that work on the centre's existing data, by their path under `hotline`: a
# group name covers all its commands. `run` and `db upgrade` create and migrate the database;
# `db current` and `doctor` report on it; `prompts`, `metrics` and `db revision` need none;
# a Celery `worker` and `beat` only reach it from tasks (which retry while it is away).
NEEDS_DATABASE: frozenset[tuple[str, ...]] = frozenset(
    {
        ("users",),
        ("rules",),
        ("seats",),
        ("report",),
        ("open311",),
        ("sweep",),
        ("web",),
        ("sip",),
    }
)


def data_dir_origin(settings: Settings) -> str:
    """How the data directory was chosen, for messages that say where we looked."""
    if "data_dir" in settings.model_fields_set:
        return f"HOTLINE_DATA_DIR={settings.data_dir}"
    return (
        "HOTLINE_DATA_DIR is not set, so `var` under the working directory "
        f"{settings.data_dir.parent}"
    )


def database_location(settings: Settings) -> str:
    if settings.database_url:
        return f"{_safe_url(settings.db_url)} (HOTLINE_DATABASE_URL)"
    return f"{settings.data_dir / 'core.db'} ({data_dir_origin(settings)})"


def require_database(settings: Settings) -> None:
    """Refuse a database that is missing (never create an empty one: a command started in
    another directory would answer as if the centre had no tickets) or not at head."""
    from hotline import migrate

    current, head = migrate.current(settings.db_url), migrate.head()
    if current is None:
        raise ConfigError(
            f"no database at {database_location(settings)}; create it with "
            "`hotline db upgrade`, or point HOTLINE_DATA_DIR or HOTLINE_DATABASE_URL at the "
            "centre's data"
        )
    if current != head:
        raise ConfigError(
            f"the database at {database_location(settings)} is at revision {current}, this "
            f"release needs {head}: run `hotline db upgrade`"
        )


def _guarded(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            require_database(get_settings())
        except Exception as exc:
            message = config_error(exc)
            if message is None:
                raise
            fail(message)
        return callback(*args, **kwargs)

    return wrapper


def _guard_commands(command: Any, path: tuple[str, ...]) -> None:
    if path in NEEDS_DATABASE:
        for leaf in _leaves(command):
            if leaf.callback is not None:
                leaf.callback = _guarded(leaf.callback)
        return
    for name, sub in getattr(command, "commands", {}).items():
        _guard_commands(sub, (*path, name))


def _leaves(command: Any) -> Iterator[Any]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield command
        return
    for sub in subcommands.values():
        yield from _leaves(sub)


def preflight(ctx: typer.Context) -> None:
    """12345 government service hotline platform."""
    # The app's callback, run before the chosen command; the check itself runs when the
    # command does (after its options are read: `--help` needs no database).
    _act_as_data_owner()
    name = ctx.invoked_subcommand
    group = ctx.command
    chosen = group.get_command(ctx, name) if name and hasattr(group, "get_command") else None
    if chosen is not None and name is not None:
        _guard_commands(chosen, (name,))


def _act_as_data_owner() -> None:
    """Root on a data directory an unprivileged user owns becomes that user (cli.privileges)
    before the command touches anything."""
    from cli.privileges import PrivilegeError, act_as_data_owner

    try:
        settings = get_settings()
    except pydantic.ValidationError:
        return  # the command reports the setting itself, in its own `error:` line
    try:
        act_as_data_owner(settings.data_dir)
    except PrivilegeError as exc:
        raise ConfigError(str(exc)) from None


# ---------------------------------------------------------------- ports


def port_in_use(host: str, port: int, *, udp: bool = False) -> OSError | None:
    """Whether binding ``host:port`` fails (the error), as the server would bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(family, kind) as s:
        if not udp:  # as uvicorn: a port in TIME_WAIT is free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc
    return None


def require_free_port(host: str, port: int, *, variable: str, udp: bool = False) -> None:
    error = port_in_use(host, port, udp=udp)
    if error is not None:
        proto = "udp" if udp else "tcp"
        raise ConfigError(
            f"cannot listen on {host}:{port}/{proto} ({variable}): {error.strerror or error}; "
            f"stop what holds it (`ss -lnp 'sport = :{port}'`) or choose another port"
        )


# ---------------------------------------------------------------- helpers


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


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())
