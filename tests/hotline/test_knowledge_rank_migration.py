"""Migration 0024: the full-text index is the migrations' (SQLite's FTS5 table was made on
the first search, out of their sight), the counts of the index's terms are made from what a
database indexed before, and the schema comparison leaves FTS5's shadow tables alone."""

from __future__ import annotations

from sqlalchemy import text
from sqlmodel import Session

from core.db import make_engine, make_session_factory
from hotline import migrate
from hotline.knowledge import service
from hotline.knowledge.models import KnowledgeArticleCreate, KnowledgeArticleVersion
from hotline.knowledge.search import make_index
from hotline.knowledge.terms import document_terms
from tests.factories import build_world

# What revision 0023's search made on its first use of a SQLite database.
OLD_FTS = (
    "CREATE VIRTUAL TABLE knowledge_fts USING fts5(words, pinyin, grams, "
    "content='knowledge_search', content_rowid='article_id', tokenize='unicode61')",
    "CREATE TRIGGER knowledge_fts_insert AFTER INSERT ON knowledge_search BEGIN "
    "INSERT INTO knowledge_fts(rowid, words, pinyin, grams) "
    "VALUES (new.article_id, new.words, new.pinyin, new.grams); END",
    "CREATE TRIGGER knowledge_fts_delete AFTER DELETE ON knowledge_search BEGIN "
    "INSERT INTO knowledge_fts(knowledge_fts, rowid, words, pinyin, grams) "
    "VALUES ('delete', old.article_id, old.words, old.pinyin, old.grams); END",
)
TITLE = "供水中断时的临时供水安排"
BODY = "因管网抢修造成供水中断的，应提前24小时公告，安排送水车临时供水。"


def fts_objects(engine) -> set[str]:
    with engine.connect() as conn:
        return {
            name
            for (name,) in conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE name LIKE 'knowledge_fts%'"
            )
        }


def test_a_migrated_database_has_its_search_index_before_anything_is_searched(fresh_db_url):
    migrate.upgrade(fresh_db_url)

    engine = make_engine(fresh_db_url)
    try:
        if engine.dialect.name == "sqlite":
            assert {
                "knowledge_fts",
                "knowledge_fts_data",
                "knowledge_fts_insert",
                "knowledge_fts_delete",
                "knowledge_fts_update",
            } <= fts_objects(engine)
        else:
            with engine.connect() as conn:
                options = conn.execute(
                    text("SELECT reloptions FROM pg_class WHERE relname = 'knowledge_search'")
                ).scalar_one()
                holding = conn.execute(
                    text("SELECT to_regprocedure('knowledge_holding(tsquery)')")
                ).scalar_one()
            assert {"toast_tuple_target=128", "parallel_workers=0"} <= set(options)
            assert holding is not None
    finally:
        engine.dispose()
    # FTS5's shadow tables are no strays for the schema comparison
    assert migrate.differences(fresh_db_url) == []


def publish_as_0023_did(session: Session, clock) -> int:
    """An article published and indexed by revision 0023's code: the document row in its
    format (no title, no length; on PostgreSQL every term a lexeme as it is)."""
    world = build_world(session, clock.now())
    supervisor, water = world.staff["supervisor"], world.units["WATER"].id
    assert water is not None
    data = KnowledgeArticleCreate(title=TITLE, body=BODY, category_code="02", owner_unit_id=water)
    article = service.create_article(session, user=supervisor, data=data, now=clock.now())
    session.execute(
        text(
            "UPDATE knowledge_article SET status = 'published', published_version = 1, "
            "published_at = :now, published_by = :user WHERE id = :id"
        ),
        {"now": clock.now(), "user": supervisor.id, "id": article.id},
    )
    version = session.get(KnowledgeArticleVersion, article.id)
    assert version is not None
    terms = document_terms(version)
    sqlite = session.get_bind().dialect.name == "sqlite"
    if sqlite:
        for ddl in OLD_FTS:
            session.execute(text(ddl))
    session.execute(
        text(
            "INSERT INTO knowledge_search (article_id, version, words, pinyin, grams, document) "
            "VALUES (:id, 1, :words, :pinyin, :grams, "
            + ("NULL" if sqlite else "array_to_tsvector(CAST(:lexemes AS text[]))")
            + ")"
        ),
        {
            "id": article.id,
            "words": " ".join(terms.words),
            "pinyin": " ".join(terms.pinyin),
            "grams": " ".join(terms.grams),
            "lexemes": [*terms.words, *terms.pinyin, *terms.grams],
        },
    )
    session.commit()
    assert article.id is not None
    return article.id


def test_a_base_indexed_before_0024_is_found_after_the_upgrade_with_its_words_counted(
    fresh_db_url, clock
):
    migrate.upgrade(fresh_db_url, "0023")
    engine = make_engine(fresh_db_url)
    try:
        with make_session_factory(engine)() as session:
            article_id = publish_as_0023_did(session, clock)

        migrate.upgrade(fresh_db_url)

        [hit] = make_index(engine).search("停水了有没有送水车", now=clock.now())
        assert hit.article_id == article_id
        assert {"送水车", "供水"} <= set(hit.matched_words)
        with engine.connect() as conn:
            counts = dict(
                conn.execute(
                    text(
                        "SELECT kind || ':' || term, articles FROM knowledge_term "
                        "WHERE term IN ('articles', '送水', '供水', 'gongshui')"
                    )
                ).all()
            )
            title = conn.execute(text("SELECT title FROM knowledge_search")).scalar_one()
        assert counts == {
            "#:articles": 1,
            "g:送水": 1,  # jieba cut 送 / 水车: the characters found it
            "w:供水": 1,
            "g:供水": 1,
            "p:gongshui": 1,
        }
        assert {"供", "水", "供水", "临时"} <= set(title.split())
    finally:
        engine.dispose()
    assert migrate.differences(fresh_db_url) == []
