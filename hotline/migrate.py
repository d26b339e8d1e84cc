"""Alembic, driven from code: the migrations live inside the package (hotline/migrations),
so an installed platform can migrate its database without an alembic.ini anywhere."""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import make_url

from core.db import make_engine
from core.errors import Conflict

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an attribute, not an option: ConfigParser would choke on a '%' in a password.
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).exists():
            return None  # asking must not create an empty database file
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Leave out of the comparison what no model declares on purpose: SQLite's FTS5 index
    of the knowledge base (knowledge_fts and its shadow tables knowledge_fts_data, _idx,
    _docsize, _config), made by migration 0024 and kept by triggers."""
    return not (
        type_ == "table" and reflected and name is not None and name.startswith("knowledge_fts")
    )


def differences(url: str) -> list:
    """What autogenerate would write: the differences between the database and the models."""
    from hotline.tables import metadata

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": include_object}
            )
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(""))


def head() -> str | None:
    return script_directory().get_current_head()


def revision(message: str, url: str | None = None) -> Path:
    """Autogenerate the next migration from the difference between the migrations so far and
    hotline.tables.metadata. Without `url`, a throwaway SQLite database is brought to head
    and compared. Revisions are numbered 0001, 0002, … in order. Returns the new file."""
    with tempfile.TemporaryDirectory(prefix="hotline-revision-") as tmp:
        if url is None:
            url = f"sqlite:///{Path(tmp) / 'head.db'}"
            upgrade(url)
        if not differences(url):
            raise Conflict("the models match the migrations: there is nothing to generate")
        rev_id = f"{len(list(script_directory().walk_revisions())) + 1:04d}"
        script = command.revision(
            alembic_config(url), message=message, autogenerate=True, rev_id=rev_id
        )
    # One head, no --splice: alembic writes exactly one revision and returns its Script.
    assert isinstance(script, Script)
    return Path(script.path)
