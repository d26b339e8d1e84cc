"""Reply attachments (hotline.attachments): the checks of size and type (extension and first
bytes), the directory store, a reply with files kept whole or not at all, and files given
back only to those who may see the ticket — on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from core.errors import NotFound
from core.settings import Settings, WebSettings
from dispatch import handling, routing
from dispatch.models import Assignment, AssignmentStatus, Attachment
from hotline import attachments
from hotline.attachments import AttachmentRefused, DirectoryStore, Limits, Upload
from tests.factories import build_world
from tickets.intake import create_ticket
from tickets.models import TicketCreate

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
PDF = b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF\n"
LIMITS = Limits(max_bytes=1024, types=frozenset({"pdf", "png", "txt", "docx"}))


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [
        ("photo.PNG", PNG, "image/png"),
        ("reply.pdf", PDF, "application/pdf"),
        ("说明.txt", "已处理完毕".encode(), "text/plain; charset=utf-8"),
        ("form.docx", b"PK\x03\x04" + b"\x00" * 10, attachments.KINDS["docx"][0]),
    ],
)
def test_given_allowed_file_when_checked_then_its_content_type(name, data, content_type):
    assert attachments.check(Upload(name, data), LIMITS) == content_type


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("empty.pdf", b"", "empty"),
        ("big.png", PNG + b"\x00" * 1024, "too_big"),
        ("virus.exe", b"MZ\x90\x00", "type"),
        ("page.pdf", b"<script>alert(1)</script>", "type"),  # the name lies
        ("photo.jpg", b"\xff\xd8\xff\xe0", "type"),  # a known type this centre does not take
        ("binary.txt", b"\x00\x01\x02", "type"),
        ("noextension", PDF, "type"),
    ],
)
def test_given_refused_file_when_checked_then_the_problem_is_named(name, data, problem):
    with pytest.raises(AttachmentRefused) as refused:
        attachments.check(Upload(name, data), LIMITS)
    assert refused.value.problem == problem


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("C:\\Users\\me\\现场.png", "现场.png"),
        ("../../etc/passwd.txt", "passwd.txt"),
        ("a\x00b\n.pdf", "ab.pdf"),
        ("", "file"),
        ("x" * 300 + ".pdf", "x" * 196 + ".pdf"),
    ],
)
def test_given_a_browsers_file_name_then_only_its_own_name_is_kept(sent, kept):
    assert attachments.clean_name(sent) == kept


def test_given_directory_store_then_put_get_delete_and_no_paths_as_keys(tmp_path: Path):
    store = DirectoryStore(tmp_path)
    store.put("ab12cd", b"data")
    assert store.get("ab12cd") == b"data" and (tmp_path / "ab" / "ab12cd").exists()
    assert not list(tmp_path.rglob(".upload-*"))
    store.delete("ab12cd")
    with pytest.raises(FileNotFoundError):
        store.get("ab12cd")
    with pytest.raises(ValueError):
        store.put("../escape", b"x")


def test_given_settings_then_the_store_is_under_the_data_dir_and_limits_configurable(tmp_path):
    settings = Settings(
        data_dir=tmp_path, web=WebSettings(attachment_max_bytes=5, attachment_types=[".PDF"])
    )
    store = attachments.store_for(settings)
    assert isinstance(store, DirectoryStore) and store.root == tmp_path / "attachments"
    assert Limits.of(settings) == Limits(max_bytes=5, types=frozenset({"pdf"}))


@pytest.fixture
def dispatched(session, clock):
    """A water cut the rules send to WATER (lead) and HOUSING (co), and the world's people."""
    world = build_world(session, clock.now())
    intake = create_ticket(
        session,
        data=TicketCreate(description="幸福小区停水三天了，请尽快恢复供水"),
        actor="operator",
        now=clock.now(),
    )
    routing.dispatch_ticket(session, ticket_id=intake.ticket.id, now=clock.now())
    lead = session.scalars(
        select(Assignment).where(
            Assignment.ticket_id == intake.ticket.id, Assignment.role == "lead"
        )
    ).one()
    handling.sign(session, assignment_id=lead.id, actor=world.handlers["WATER"], now=clock.now())
    return world, lead


def test_given_signed_assignment_when_replying_with_files_then_kept_and_fetched_by_the_unit(
    session, clock, tmp_path, dispatched
):
    world, lead = dispatched
    store = DirectoryStore(tmp_path)
    assignment, kept = attachments.reply_with_attachments(
        session,
        store=store,
        limits=LIMITS,
        assignment_id=lead.id,
        text="已修复",
        uploads=[Upload("现场.png", PNG), Upload("回执.pdf", PDF)],
        actor=world.handlers["WATER"],
        now=clock.now(),
    )
    assert assignment.status == AssignmentStatus.replied and len(kept) == 2
    row, data = attachments.fetch(
        session, store=store, user=world.handlers["WATER"], attachment_id=kept[0].id
    )
    assert data == PNG and row.filename == "现场.png" and row.size == len(PNG)
    assert [a.filename for a in attachments.attachments_of(session, ticket_id=lead.ticket_id)] == [
        "现场.png",
        "回执.pdf",
    ]
    for stranger in (world.handlers["HRSS"],):
        with pytest.raises(NotFound) as theirs:
            attachments.fetch(session, store=store, user=stranger, attachment_id=kept[0].id)
        with pytest.raises(NotFound) as missing:
            attachments.fetch(session, store=store, user=stranger, attachment_id=kept[0].id + 99)
        assert str(theirs.value).replace(str(kept[0].id), "N") == str(missing.value).replace(
            str(kept[0].id + 99), "N"
        )


def test_given_one_refused_file_when_replying_then_no_reply_and_nothing_stored(
    session, clock, tmp_path, dispatched
):
    world, lead = dispatched
    with pytest.raises(AttachmentRefused):
        attachments.reply_with_attachments(
            session,
            store=DirectoryStore(tmp_path),
            limits=LIMITS,
            assignment_id=lead.id,
            text="已修复",
            uploads=[Upload("ok.png", PNG), Upload("bad.exe", b"MZ")],
            actor=world.handlers["WATER"],
            now=clock.now(),
        )
    session.refresh(lead)
    assert lead.status == AssignmentStatus.signed
    assert session.scalars(select(Attachment)).first() is None and not list(tmp_path.iterdir())


def test_given_another_units_assignment_when_attaching_then_not_found(
    session, clock, tmp_path, dispatched
):
    world, lead = dispatched
    with pytest.raises(NotFound):
        attachments.attach(
            session,
            store=DirectoryStore(tmp_path),
            limits=LIMITS,
            assignment=lead,
            uploads=[Upload("ok.png", PNG)],
            actor=world.handlers["HRSS"],
            now=clock.now(),
        )
