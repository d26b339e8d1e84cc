"""`hotline seats` as the admin runs it, on SQLite and PostgreSQL: add prints a password that
a phone really registers with (checked against the stored digest), list shows the state,
password makes a new one, disable refuses the seat; bad input is one clear line."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from cli.app import app
from core.db import make_engine, make_session_factory
from core.settings import get_settings
from hotline import migrate
from hotline.calls.seats import DbSeatStore
from telephony.sip_registrar import seat_ha1


@pytest.fixture
def cli(fresh_db_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DbSeatStore]:
    """A migrated database the `hotline` command is configured with, and its seat store."""
    for name in list(os.environ):
        if name.startswith("HOTLINE_") and name not in ("HOTLINE_SECRET_KEY",):
            if not name.startswith("HOTLINE_TEST_"):
                monkeypatch.delenv(name)
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("HOTLINE_DATABASE_URL", fresh_db_url)
    monkeypatch.setenv("HOTLINE_ACD__REALM", "centre.test")
    get_settings.cache_clear()
    migrate.upgrade(fresh_db_url)
    engine = make_engine(fresh_db_url)
    yield DbSeatStore(make_session_factory(engine))
    engine.dispose()
    get_settings.cache_clear()


def _password(output: str) -> str:
    match = re.search(r"password(?: of seat \d+)?: (\S+)", output)
    assert match, output
    return match.group(1)


def test_given_new_extension_when_seats_add_then_password_printed_once_and_digest_stored(cli):
    result = CliRunner().invoke(app, ["seats", "add", "1001", "--name", "desk 1"])

    assert result.exit_code == 0, result.output
    password = _password(result.output)
    seat = cli.credentials("1001")
    assert seat is not None and seat.enabled and seat.realm == "centre.test"
    assert (seat.ha1_md5, seat.ha1_sha256) == seat_ha1("1001", "centre.test", password)


def test_given_existing_seat_when_added_again_then_clear_error(cli):
    runner = CliRunner()
    assert runner.invoke(app, ["seats", "add", "1001"]).exit_code == 0

    again = runner.invoke(app, ["seats", "add", "1001"])

    assert again.exit_code == 1 and "seat 1001 exists already" in again.output


@pytest.mark.parametrize("bad", ["1", "10a", "12345678901234567"])
def test_given_bad_extension_when_seats_add_then_clear_error_and_nothing_made(cli, bad):
    result = CliRunner().invoke(app, ["seats", "add", bad])

    assert result.exit_code == 1 and "2 to 16 digits" in result.output
    assert cli.credentials(bad) is None


def test_seats_list_shows_each_seat_and_its_state(cli):
    runner = CliRunner()
    assert runner.invoke(app, ["seats", "list"]).output.startswith("no seats yet")
    runner.invoke(app, ["seats", "add", "1001", "--name", "desk 1"])
    runner.invoke(app, ["seats", "add", "1002"])
    runner.invoke(app, ["seats", "disable", "1002"])

    listed = runner.invoke(app, ["seats", "list"])

    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split() == ["EXTENSION", "NAME", "STATE", "PHONE", "FROM", "UNTIL"]
    assert lines[1].split() == ["1001", "desk", "1", "offline"]
    assert lines[2].split() == ["1002", "disabled"]


def test_seats_password_makes_a_new_one_and_the_old_one_stops_matching(cli):
    runner = CliRunner()
    first = _password(runner.invoke(app, ["seats", "add", "1001"]).output)

    result = runner.invoke(app, ["seats", "password", "1001"])

    assert result.exit_code == 0, result.output
    second = _password(result.output)
    seat = cli.credentials("1001")
    assert seat is not None and second != first
    assert seat.ha1_md5 == seat_ha1("1001", "centre.test", second)[0]


def test_given_unknown_seat_when_password_or_disable_then_clear_error(cli):
    runner = CliRunner()
    for command in ("password", "disable"):
        result = runner.invoke(app, ["seats", command, "1999"])
        assert result.exit_code == 1 and "no seat 1999" in result.output


def test_seats_disable_refuses_the_seat(cli):
    runner = CliRunner()
    runner.invoke(app, ["seats", "add", "1001"])

    result = runner.invoke(app, ["seats", "disable", "1001"])

    assert result.exit_code == 0 and "seat 1001 disabled" in result.output
    seat = cli.credentials("1001")
    assert seat is not None and not seat.enabled


def test_given_the_realm_changed_then_list_says_a_new_password_is_needed_and_reset_fixes_it(
    cli, monkeypatch
):
    runner = CliRunner()
    runner.invoke(app, ["seats", "add", "1001"])
    monkeypatch.setenv("HOTLINE_ACD__REALM", "new-centre.test")
    get_settings.cache_clear()

    assert runner.invoke(app, ["seats", "list"]).output.splitlines()[1].split() == [
        "1001",
        "new-password-needed",
    ]
    password = _password(runner.invoke(app, ["seats", "password", "1001"]).output)

    assert runner.invoke(app, ["seats", "list"]).output.splitlines()[1].split() == [
        "1001",
        "offline",
    ]
    seat = cli.credentials("1001")
    assert seat is not None and seat.realm == "new-centre.test"
    assert seat.ha1_md5 == seat_ha1("1001", "new-centre.test", password)[0]
