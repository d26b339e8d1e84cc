"""Files attached to knowledge articles: checked like reply attachments and more closely,
kept in the project's file store, carried from version to version unless removed, and given
only to those who may read a version that carries them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import inspect

from core.db import make_engine
from core.errors import IllegalTransition, InvalidInput, NotFound
from hotline import migrate
from hotline.attachments import DirectoryStore, Limits, Upload
from hotline.knowledge import attachments as files
from hotline.knowledge import service
from hotline.knowledge.models import (
    KnowledgeArticleCreate,
    KnowledgeArticleUpdate,
    KnowledgeFile,
)
from tests.factories import build_world
from tests.hotline import knowledge_samples as samples

LIMITS = Limits(max_bytes=64 * 1024, types=files.TYPES)


@pytest.fixture
def world(session, clock):
    return build_world(session, clock.now())


@pytest.fixture
def store(tmp_path):
    return DirectoryStore(tmp_path / "files")


def draft(session, world, clock):
    return service.create_article(
        session,
        user=world.handlers["WATER"],
        data=KnowledgeArticleCreate(
            title="供水中断时的临时供水安排",
            body="因管网抢修造成供水中断的，应提前24小时公告。",
            category_code="020301",
            owner_unit_id=world.units["WATER"].id,
        ),
        now=clock.now(),
    )


def stage(session, world, clock, store, article, *uploads, by=None, **kw):
    return files.stage(
        session,
        store=store,
        limits=LIMITS,
        user=by or world.handlers["WATER"],
        article_id=article.id,
        uploads=list(uploads),
        now=clock.now(),
        **kw,
    )


def save(session, world, clock, article, *, add=(), remove=(), by=None, **changes):
    return files.save_version(
        session,
        user=by or world.handlers["WATER"],
        article_id=article.id,
        expected_version=article.version,
        changes=KnowledgeArticleUpdate(**changes),
        now=clock.now(),
        add=[f.id for f in add],
        remove=[f.id for f in remove],
    )


def publish(session, world, clock, article):
    supervisor = world.staff["supervisor"]
    service.submit_for_review(
        session, user=world.handlers["WATER"], article_id=article.id, now=clock.now()
    )
    service.approve_article(session, user=supervisor, article_id=article.id, now=clock.now())


def names(session, article, version):
    return [f.filename for f in files.files_of(session, article_id=article.id, version=version)]


def test_given_a_staged_pdf_when_a_version_is_saved_then_it_carries_it_and_the_one_before_not(
    session, world, clock, store
):
    article = draft(session, world, clock)
    data = samples.pdf()

    staged = stage(session, world, clock, store, article, Upload("C:\\政策\\供水条例.pdf", data))
    [kept] = staged.kept
    assert staged.refused == []
    assert (kept.filename, kept.content_type, kept.size, kept.added_in) == (
        "供水条例.pdf",
        "application/pdf",
        len(data),
        None,
    )
    assert store.get(kept.storage_key) == data

    save(session, world, clock, article, add=[kept])

    assert article.version == 2
    assert names(session, article, 2) == ["供水条例.pdf"]
    assert names(session, article, 1) == []
    [_v1, v2] = service.article_history(
        session, user=world.handlers["WATER"], article_id=article.id
    )
    assert v2.changed == [files.CHANGE]  # the files alone made a version


def test_a_new_version_carries_the_files_unless_removed_and_old_versions_keep_theirs(
    session, world, clock, store
):
    article = draft(session, world, clock)
    [pdf, image] = stage(
        session,
        world,
        clock,
        store,
        article,
        Upload("条例.pdf", samples.pdf()),
        Upload("示意图.png", samples.png()),
    ).kept
    save(session, world, clock, article, add=[pdf, image], title="供水中断时的临时供水")
    save(session, world, clock, article, body="新的答复口径。")  # v3: text only
    assert names(session, article, 3) == ["条例.pdf", "示意图.png"]

    save(session, world, clock, article, remove=[image])  # v4

    assert names(session, article, 4) == ["条例.pdf"]
    assert names(session, article, 3) == ["条例.pdf", "示意图.png"]
    changes = files.changes_by_version(files.saved_files(session, article_id=article.id))
    assert changes == {
        2: files.VersionFiles(added=["条例.pdf", "示意图.png"]),
        4: files.VersionFiles(removed=["示意图.png"]),
    }
    history = service.article_history(session, user=world.handlers["WATER"], article_id=article.id)
    assert history[2].changed == ["body"]
    assert history[1].changed == ["title", files.CHANGE]


@pytest.mark.parametrize(
    ("upload", "problem"),
    [
        (Upload("empty.pdf", b""), "empty"),
        (Upload("big.pdf", b"%PDF-" + b"0" * 64 * 1024), "too_big"),
        (Upload("setup.exe", b"MZ\x90\x00"), "type"),
        (Upload("report.pdf", samples.png()), "type"),  # says PDF, holds a PNG
        (Upload("photo.png", samples.pdf()), "type"),
        (Upload("notice.docx", samples.xlsx()), "type"),  # a spreadsheet renamed .docx
        (Upload("notice.odt", samples.docx()), "type"),
        (Upload("notice.docx", b"PK\x03\x04 not really a zip"), "type"),
        (Upload("notes.txt", b"\xff\xfe\x00binary"), "type"),
    ],
)
def test_a_file_that_is_empty_too_big_of_another_type_or_lying_about_its_content_is_refused(
    session, world, clock, store, upload, problem
):
    article = draft(session, world, clock)

    staged = stage(session, world, clock, store, article, upload)

    assert staged.kept == []
    [refused] = staged.refused
    assert refused.problem == problem
    assert list(store.root.rglob("*")) == []


@pytest.mark.parametrize(
    "upload",
    [
        Upload("a.docx", samples.docx()),
        Upload("a.xlsx", samples.xlsx()),
        Upload("a.odt", samples.odt()),
        Upload("a.txt", "停水通知：明日8时至18时".encode()),
        Upload("a.JPG", b"\xff\xd8\xff\xe0 jpeg"),
    ],
)
def test_the_office_text_and_image_types_are_accepted(session, world, clock, store, upload):
    article = draft(session, world, clock)

    staged = stage(session, world, clock, store, article, upload)

    assert [f.filename for f in staged.kept] == [upload.filename]


def test_the_same_bytes_again_are_refused_as_a_duplicate_but_not_when_the_first_is_removed(
    session, world, clock, store
):
    article = draft(session, world, clock)
    data = samples.pdf()
    [first] = stage(session, world, clock, store, article, Upload("条例.pdf", data)).kept
    saved_data = samples.pdf("Other")

    again = stage(
        session,
        world,
        clock,
        store,
        article,
        Upload("条例(1).pdf", data),
        Upload("另一份.pdf", saved_data),
        Upload("另一份副本.pdf", saved_data),
        staged=[first.id],
    )

    assert [f.filename for f in again.kept] == ["另一份.pdf"]
    [dup_staged, dup_batch] = again.refused
    assert (dup_staged.problem, dup_staged.existing) == ("duplicate", "条例.pdf")
    assert dup_batch.existing == "另一份.pdf"

    save(session, world, clock, article, add=[first])
    assert stage(session, world, clock, store, article, Upload("x.pdf", data)).refused
    replaced = stage(
        session, world, clock, store, article, Upload("x.pdf", data), removing=[first.id]
    )
    assert [f.filename for f in replaced.kept] == ["x.pdf"]


def test_no_file_may_be_added_to_an_article_in_review_or_by_another_unit(
    session, world, clock, store
):
    article = draft(session, world, clock)
    with pytest.raises(NotFound):
        stage(
            session,
            world,
            clock,
            store,
            article,
            Upload("a.pdf", samples.pdf()),
            by=world.handlers["HOUSING"],
        )
    service.submit_for_review(
        session, user=world.handlers["WATER"], article_id=article.id, now=clock.now()
    )

    with pytest.raises(IllegalTransition):
        stage(session, world, clock, store, article, Upload("a.pdf", samples.pdf()))


def test_a_staged_file_of_another_article_cannot_be_saved_with_this_one(
    session, world, clock, store
):
    article, other = draft(session, world, clock), draft(session, world, clock)
    [foreign] = stage(session, world, clock, store, other, Upload("a.pdf", samples.pdf())).kept

    with pytest.raises(InvalidInput, match="no longer there"):
        save(session, world, clock, article, add=[foreign])
    assert foreign.added_in is None


def fetchable(session, store, user, file):
    try:
        row, data = files.fetch(session, store=store, user=user, file_id=file.id)
    except NotFound:
        return False
    return row.id == file.id and data == store.get(file.storage_key)


def test_who_may_download_follows_who_may_read_the_version(session, world, clock, store):
    writer, operator = world.handlers["WATER"], world.staff["operator"]
    other_unit, supervisor = world.handlers["HOUSING"], world.staff["supervisor"]
    article = draft(session, world, clock)
    [v2_file] = stage(session, world, clock, store, article, Upload("a.pdf", samples.pdf())).kept
    assert fetchable(session, store, writer, v2_file)  # staged: its writers
    assert not fetchable(session, store, operator, v2_file)
    save(session, world, clock, article, add=[v2_file])

    # a draft's files: its unit and the centre, no operator, no other unit
    assert fetchable(session, store, writer, v2_file)
    assert fetchable(session, store, supervisor, v2_file)
    assert not fetchable(session, store, operator, v2_file)
    assert not fetchable(session, store, other_unit, v2_file)

    publish(session, world, clock, article)
    assert fetchable(session, store, operator, v2_file)
    assert fetchable(session, store, other_unit, v2_file)

    # a file only a newer draft carries stays hidden until that version is approved
    [v3_file] = stage(session, world, clock, store, article, Upload("b.png", samples.png())).kept
    assert not fetchable(session, store, operator, v3_file)
    save(session, world, clock, article, add=[v3_file], remove=[v2_file])
    assert not fetchable(session, store, operator, v3_file)
    assert fetchable(session, store, operator, v2_file)  # still in the version in service
    publish(session, world, clock, article)
    assert fetchable(session, store, operator, v3_file)
    assert fetchable(session, store, operator, v2_file)  # version 2 is still readable history

    service.retire_article(
        session, user=supervisor, article_id=article.id, reason="政策废止", now=clock.now()
    )
    assert not fetchable(session, store, operator, v3_file)
    assert fetchable(session, store, supervisor, v3_file)
    with pytest.raises(NotFound):
        files.fetch(session, store=store, user=operator, file_id=10**8)


def test_uploads_no_version_took_are_purged_with_their_bytes(session, world, clock, store):
    article = draft(session, world, clock)
    [kept, left] = stage(
        session,
        world,
        clock,
        store,
        article,
        Upload("a.pdf", samples.pdf()),
        Upload("b.png", samples.png()),
    ).kept
    save(session, world, clock, article, add=[kept])
    clock.advance(timedelta(days=2))

    assert files.purge_unsaved(session, store=store, before=clock.now() - timedelta(days=1)) == 1

    assert session.get(KnowledgeFile, left.id) is None
    with pytest.raises(FileNotFoundError):
        store.get(left.storage_key)
    assert store.get(kept.storage_key) == samples.pdf()


def test_the_migration_makes_the_files_table_the_model_declares_and_takes_it_away(
    fresh_db_url,
):
    migrate.upgrade(fresh_db_url, "0023")

    ours = [d for d in migrate.differences(fresh_db_url) if "knowledge_file" in repr(d)]
    assert ours == []
    migrate.downgrade(fresh_db_url, "0023-1")
    engine = make_engine(fresh_db_url)
    try:
        assert "knowledge_file" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_the_nightly_task_purges_what_no_version_took_after_a_day(
    session, world, clock, store, tmp_path
):
    from sqlmodel import Session

    from core import runtime
    from core.settings import Settings
    from hotline import tasks
    from hotline.worker import BEAT_SCHEDULE

    settings = Settings(environment="test", data_dir=tmp_path)
    settings.web.attachment_dir = store.root
    article = draft(session, world, clock)
    [left] = stage(session, world, clock, store, article, Upload("b.png", samples.png())).kept
    session.commit()
    left_id, left_key = left.id, left.storage_key
    connection = session.connection()
    runtime.set_runtime(
        settings=settings,
        session_factory=lambda: Session(bind=connection, join_transaction_mode="create_savepoint"),
        clock=clock,
    )
    try:
        clock.advance(timedelta(hours=23))
        assert tasks.purge_unsaved_knowledge_files.run() == 0  # a form left open: kept
        clock.advance(timedelta(hours=2))
        assert tasks.purge_unsaved_knowledge_files.run() == 1
    finally:
        runtime.reset_runtime()
    session.expire_all()
    assert session.get(KnowledgeFile, left_id) is None
    with pytest.raises(FileNotFoundError):
        store.get(left_key)
    assert BEAT_SCHEDULE["knowledge-unsaved-files"]["task"] == "knowledge.purge_unsaved_files"
