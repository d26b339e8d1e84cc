"""Engine, sessions, column types and after-commit side effects. Imports no domain."""

from __future__ import annotations

import base64
import enum
import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from sqlalchemy import JSON, DateTime, Table, event
from sqlalchemy import Enum as SAEnum
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import class_mapper, make_transient_to_detached, sessionmaker
from sqlalchemy.orm.instrumentation import manager_of_class
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel, create_engine

from core.errors import InvalidInput


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out — on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType = JSON().with_variant(JSON(), "postgresql")


def enum_type(enum_cls: type[enum.Enum], length: int = 32) -> SAEnum:
    """Enums stored as their values in a VARCHAR, not as PostgreSQL enum types: a new
    status or channel is then a code change, not an ALTER TYPE migration."""
    return SAEnum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


def make_engine(url: str, **kwargs: Any) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide where transactions begin, so that
            # BEGIN IMMEDIATE takes the write lock up front and concurrent writers queue.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, class_=Session, expire_on_commit=False)


@contextmanager
def session_scope(factory: Callable[[], Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, then run after-commit hooks."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


_AFTER_COMMIT_KEY = "hotline_after_commit"


def after_commit(session: Session, fn: Callable[[], Any]) -> None:
    """Run `fn` once the session's transaction commits; drop it on rollback.

    Notifications and Celery sends go through here so that a rolled-back unit of work
    never tells anyone about something that did not happen.
    """
    session.info.setdefault(_AFTER_COMMIT_KEY, []).append(fn)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    # SQLAlchemy tells "after_commit" for a SAVEPOINT released too (begin_nested): nothing is
    # committed yet then, and the outer transaction may still roll back.
    if session.in_nested_transaction():
        return
    hooks = session.info.pop(_AFTER_COMMIT_KEY, [])
    for fn in hooks:
        fn()


@event.listens_for(Session, "after_soft_rollback")
def _drop_after_commit(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:  # only the outermost rollback discards work
        session.info.pop(_AFTER_COMMIT_KEY, None)


_Row = TypeVar("_Row", bound=SQLModel)


@functools.cache
def _defaults(
    model: type[SQLModel],
) -> tuple[frozenset[str], dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...]]:
    """A model's required fields, constant defaults and default factories."""
    required, constants, factories = set(), {}, []
    for name, info in model.model_fields.items():
        if info.is_required():
            required.add(name)
        elif info.default_factory is not None:
            # No table model's factory takes the validated data: each is called bare.
            factories.append((name, cast(Callable[[], Any], info.default_factory)))
        else:
            constants[name] = info.default
    return frozenset(required), constants, tuple(factories)


def build_row(model: type[_Row], values: Mapping[str, Any]) -> _Row:
    """A table-model instance from values that are already valid — a validated create
    schema plus what the code itself sets — with the model's defaults for the rest.

    `Model(...)` and `Model.model_validate` set every field through both pydantic's and
    SQLAlchemy's attribute machinery; on the intake path that is a fifth of the CPU per
    ticket. Here the values go into the instance dict at once; SQLAlchemy reads them from
    there when it writes the row, and instrumented changes made later are tracked as usual.
    Anything not yet validated belongs in `model_validate`, not here."""
    required, constants, factories = _defaults(model)
    full = {**constants, **{name: make() for name, make in factories}, **values}
    if full.keys() != model.model_fields.keys():
        unknown = sorted(full.keys() - model.model_fields.keys())
        if unknown:
            raise TypeError(f"{model.__name__} has no field {unknown[0]}")
        raise TypeError(f"{model.__name__}.{sorted(required - full.keys())[0]} is required")
    class_mapper(model)  # configures the mappers on first use, as __init__ would
    row = manager_of_class(model).new_instance()
    row.__dict__.update(full)
    object.__setattr__(row, "__pydantic_fields_set__", set(values))
    object.__setattr__(row, "__pydantic_extra__", None)
    object.__setattr__(row, "__pydantic_private__", None)
    return row


def attach(session: Session, *rows: Any) -> None:
    """Make rows written with plain INSERTs, or read with plain SELECTs, persistent in
    `session` as if the ORM had loaded them."""
    for row in rows:
        make_transient_to_detached(row)
        session.add(row)


def loaded(session: Session, model: type[_Row], values: Mapping[str, Any]) -> _Row:
    """The row `values` (a plain SELECT's mapping, every column) as a persistent instance:
    the one already in the session's identity map, else a new one attached."""
    existing: _Row | None = session.identity_map.get(session.identity_key(model, values["id"]))
    if existing is not None:
        return existing
    row = build_row(model, values)
    attach(session, row)
    return row


class _Stored(Protocol):
    @property
    def id(self) -> int | None: ...


def saved_id(row: _Stored) -> int:
    """The id of a row that was flushed or loaded. SQLModel types every `id` as optional,
    since a row has none before its INSERT; asking for the id of a row never written is a
    bug, and raises LookupError."""
    ident = row.id
    if ident is None:
        raise LookupError(f"{type(row).__name__} has no id: it was never flushed")
    return ident


def table_of(model: type[SQLModel]) -> Table:
    """A table model's Table. SQLAlchemy's declarative mapping sets `__table__`; SQLModel's
    class does not declare it, so type checkers cannot see it."""
    table = model.__table__  # type: ignore[attr-defined]  # see the docstring
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not a table model")
    return table


def keyset_cursor(at: datetime, ident: int) -> str:
    """An opaque page cursor for lists ordered newest first by (time, id)."""
    raw = f"{at.isoformat()}|{ident}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def parse_keyset_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, ident = raw.rsplit("|", 1)
        return datetime.fromisoformat(at), int(ident)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not one this API issued", cursor=cursor) from exc
