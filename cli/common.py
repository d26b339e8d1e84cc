"""What every `hotline` command shares: expected failures end in one clear line instead of
a traceback, a session on the configured database, and table output."""

from __future__ import annotations

import functools
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
from core.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


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


def _print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))] if rows else []
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())
