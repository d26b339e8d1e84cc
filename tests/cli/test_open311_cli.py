"""`hotline open311 client` on a migrated database (SQLite and PostgreSQL): add prints a key
that authenticates (only its hash is stored), list shows it, revoke makes it refused."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session
from typer.testing import CliRunner

from cli.app import app
from core.db import make_engine, make_session_factory
from core.settings import get_settings
from hotline import migrate
from hotline.open311 import clients
from hotline.open311.models import Open311Client


@pytest.fixture
def cli(
    fresh_db_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[sessionmaker[Session]]:
    for name in list(os.environ):
        if name.startswith("HOTLINE_") and name != "HOTLINE_SECRET_KEY":
            if not name.startswith("HOTLINE_TEST_"):
                monkeypatch.delenv(name)
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("HOTLINE_DATABASE_URL", fresh_db_url)
    get_settings.cache_clear()
    migrate.upgrade(fresh_db_url)
    engine = make_engine(fresh_db_url)
    yield make_session_factory(engine)
    engine.dispose()
    get_settings.cache_clear()


def test_add_list_and_revoke_a_client(cli):
    runner = CliRunner()
    added = runner.invoke(app, ["open311", "client", "add", "市民 App"])
    assert added.exit_code == 0, added.output
    match = re.search(r"client (\d+) \(市民 App\) registered\napi_key: (\S+)", added.output)
    assert match, added.output
    ident, key = int(match.group(1)), match.group(2)
    with cli() as session:
        verified = clients.authenticate(session, key=key, now=datetime.now(UTC))
        assert verified is not None and verified.id == ident and verified.name == "市民 App"
        client = session.get(Open311Client, ident)
        assert client is not None and key not in client.key_hash
        assert client.created_by.startswith("cli:")

    listed = runner.invoke(app, ["open311", "client", "list"])
    assert listed.exit_code == 0 and "市民 App" in listed.output and key not in listed.output

    revoked = runner.invoke(app, ["open311", "client", "revoke", str(ident)])
    assert revoked.exit_code == 0, revoked.output
    with cli() as session:
        assert clients.authenticate(session, key=key, now=datetime.now(UTC)) is None

    again = runner.invoke(app, ["open311", "client", "revoke", str(ident)])
    assert again.exit_code == 1 and "already revoked" in again.output
    empty = runner.invoke(app, ["open311", "client", "add", "  "])
    assert empty.exit_code == 1 and "needs a name" in empty.output
