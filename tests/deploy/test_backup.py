"""deploy/backup: `hotline-backup` then `hotline-restore` into a fresh database and data
directory on the machine's PostgreSQL, and the platform reads the centre back — tickets,
a call's recording (its path rewritten to the new recording directory), a reply file."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import make_engine, make_session_factory, session_scope
from core.settings import Settings
from hotline import attachments, intake
from hotline.calls import records
from telephony.models import CallDirection, CallRecord
from tests import services
from tickets.models import Ticket, TicketCreate

BACKUP = Path(__file__).parents[2] / "deploy" / "backup"
NOW = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
DESCRIPTIONS = ["小区停水了，请尽快处理", "路灯不亮已经三天", "楼下饭店油烟扰民"]


def _env(db_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update(
        HOTLINE_DATABASE_URL=db_url,
        HOTLINE_DATA_DIR=str(data_dir),
        HOTLINE_SECRET_KEY=os.environ["HOTLINE_SECRET_KEY"],
    )
    return env


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)


def _write_wav(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x01\x00" * int(8000 * seconds))


@pytest.fixture
def databases():
    made = [services.create_database("hotline_backup") for _ in range(2)]
    yield [url for url, _ in made]
    for _, drop in made:
        drop()


def test_given_a_centre_when_backed_up_and_restored_elsewhere_then_the_platform_reads_it(
    databases, tmp_path
):
    source_url, target_url = databases
    source_dir, target_dir = tmp_path / "source", tmp_path / "restored"
    source_dir.mkdir()
    env = _env(source_url, source_dir)
    migrated = _run([sys.executable, "-m", "cli", "db", "upgrade"], env)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr

    settings = Settings(environment="test", database_url=source_url, data_dir=source_dir)
    engine = make_engine(source_url)
    with session_scope(make_session_factory(engine)) as session:
        numbers = [
            intake.submit(
                session, data=TicketCreate(description=d), actor=None, now=NOW
            ).ticket.number
            for d in DESCRIPTIONS
        ]
        first = session.scalars(select(Ticket).where(Ticket.number == numbers[0])).one()
        recording = settings.recording_dir / "call-1.wav"
        _write_wav(recording, 1.5)
        session.add(
            CallRecord(
                call_id="call-1@backup.test",
                direction=CallDirection.INBOUND,
                arrived_at=NOW,
                recording_path=str(recording),
                ticket_id=first.id,
                created_at=NOW,
                updated_at=NOW,
            )
        )
    engine.dispose()
    reply_file = b"%PDF-1.4 the unit's reply\n"
    attachments.store_for(settings).put("ab12cd34", reply_file)
    (source_dir / "metrics").mkdir()
    (source_dir / "metrics" / "counter_1.db").write_bytes(b"stale")

    backups = tmp_path / "backups"
    (backups / "hotline-20261101T000000Z").mkdir(parents=True)  # an older one
    (backups / "hotline-20261201T000000Z").mkdir()
    made = _run([str(BACKUP / "hotline-backup"), "--keep", "2", str(backups)], env)
    assert made.returncode == 0, made.stdout + made.stderr
    assert f"old backup removed: {backups}/hotline-20261101T000000Z" in made.stdout
    kept = sorted(backups.glob("hotline-*"))
    assert len(kept) == 2 and kept[0].name == "hotline-20261201T000000Z"
    backup = kept[1]
    assert (backup / "database.dump").read_bytes()[:5] == b"PGDMP"  # pg_dump -Fc
    assert "revision=" in (backup / "MANIFEST").read_text()

    target_env = _env(target_url, target_dir)
    restored = _run([str(BACKUP / "hotline-restore"), str(backup)], target_env)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "1 call record(s) updated" in restored.stdout

    # What the platform sees in the restored installation.
    upgraded = _run([sys.executable, "-m", "cli", "db", "upgrade"], target_env)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    target = Settings(environment="test", database_url=target_url, data_dir=target_dir)
    engine = make_engine(target_url)
    with session_scope(make_session_factory(engine)) as session:
        tickets = session.scalars(select(Ticket).order_by(Ticket.number)).all()
        assert [(t.number, t.description) for t in tickets] == list(
            zip(numbers, DESCRIPTIONS, strict=True)
        )
        path = records.recording_of(session, call_id="call-1@backup.test")
        assert path == target.recording_dir / "call-1.wav"
        with wave.open(str(path)) as played:
            assert played.getnframes() == 12000
        # the restored centre takes new tickets after the old ones
        more = intake.submit(
            session, data=TicketCreate(description="噪音扰民"), actor=None, now=NOW
        )
        assert more.ticket.number > numbers[-1]
    engine.dispose()
    assert attachments.store_for(target).get("ab12cd34") == reply_file
    assert not (target_dir / "metrics").exists()  # rebuilt at start, not restored

    # A second restore into the now used database is refused, and changes nothing.
    again = _run([str(BACKUP / "hotline-restore"), str(backup)], target_env)
    assert again.returncode == 1
    assert "error: the target database already has" in again.stderr


def test_given_a_damaged_backup_when_restored_then_refused_before_anything_changes(
    databases, tmp_path
):
    source_url, target_url = databases
    env = _env(source_url, tmp_path / "source")
    (tmp_path / "source").mkdir()
    assert _run([sys.executable, "-m", "cli", "db", "upgrade"], env).returncode == 0
    made = _run([str(BACKUP / "hotline-backup"), str(tmp_path / "b")], env)
    assert made.returncode == 0, made.stderr
    (backup,) = (tmp_path / "b").glob("hotline-*")
    with (backup / "database.dump").open("r+b") as dump:
        dump.seek(100)
        dump.write(b"\x00\x00\x00")

    restored = _run(
        [str(BACKUP / "hotline-restore"), str(backup)], _env(target_url, tmp_path / "t")
    )

    assert restored.returncode == 1
    assert "checksums do not match" in restored.stderr
    assert not (tmp_path / "t").exists()


def test_given_a_destination_in_the_data_dir_when_backing_up_then_refused(tmp_path):
    env = _env("postgresql+psycopg://postgres@127.0.0.1:5432/none", tmp_path)
    result = _run([str(BACKUP / "hotline-backup"), str(tmp_path / "backups")], env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "inside the data directory" in result.stderr
    assert not (tmp_path / "backups").exists()


def test_given_no_database_url_when_backing_up_then_one_error_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    result = _run(
        [str(BACKUP / "hotline-backup"), "--env-file", str(tmp_path / "none"), str(tmp_path)],
        env,
    )
    assert result.returncode == 1
    assert result.stderr == f"error: HOTLINE_DATABASE_URL is not set (nor in {tmp_path / 'none'})\n"
