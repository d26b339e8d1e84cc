"""The migrations build exactly the schema hotline.tables declares, on both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from core.db import make_engine
from core.errors import Conflict
from hotline import migrate


@pytest.fixture
def fresh_url(fresh_db_url: str) -> str:
    """An empty database on each backend (the --backend option chooses which)."""
    return fresh_db_url


def test_given_fresh_database_when_upgraded_to_head_then_schema_matches_models(fresh_url):
    assert migrate.current(fresh_url) is None

    migrate.upgrade(fresh_url)

    assert migrate.current(fresh_url) == migrate.head()
    assert migrate.differences(fresh_url) == []


def test_given_migrated_database_when_upgraded_again_then_nothing_changes(fresh_url):
    migrate.upgrade(fresh_url)
    migrate.upgrade(fresh_url)

    assert migrate.current(fresh_url) == migrate.head()


def test_given_migrated_database_when_downgraded_to_base_then_only_version_table_is_left(
    fresh_url,
):
    migrate.upgrade(fresh_url)

    migrate.downgrade(fresh_url, "base")

    engine = make_engine(fresh_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables == {"alembic_version"}
    migrate.upgrade(fresh_url)
    assert migrate.differences(fresh_url) == []


def test_asking_a_missing_sqlite_file_for_its_revision_does_not_create_it(tmp_path):
    path = tmp_path / "absent" / "core.db"

    assert migrate.current(f"sqlite:///{path}") is None
    assert not path.exists()


def test_revisions_form_one_numbered_line():
    scripts = migrate.script_directory()
    revisions = list(reversed(list(scripts.walk_revisions())))

    assert [r.revision for r in revisions] == [f"{i:04d}" for i in range(1, len(revisions) + 1)]
    assert scripts.get_heads() == [migrate.head()]


def test_given_models_match_the_migrations_when_asked_for_a_revision_then_nothing_is_written():
    before = set(migrate.MIGRATIONS_DIR.joinpath("versions").glob("*.py"))

    with pytest.raises(Conflict, match="nothing to generate"):
        migrate.revision("no change")

    assert set(migrate.MIGRATIONS_DIR.joinpath("versions").glob("*.py")) == before
