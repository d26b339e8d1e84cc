"""knowledge search: the counts of the index's terms (knowledge_term) for one ranking on both
databases; the title's characters and bigrams and the number of words in the index;
SQLite's FTS5 index made here (it was made on first use); PostgreSQL's lexemes by kind
(p: pinyin, g: bigrams, t: title) and the terms out of line

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-05 12:00:00

"""

import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024"
down_revision: str | Sequence[str] | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As hotline/knowledge/models.py has them today (a migration keeps its own copy). A later
# batch migration of knowledge_search on SQLite drops the triggers: it must make them again.
FTS_DDL = (
    "CREATE VIRTUAL TABLE knowledge_fts USING fts5(words, pinyin, grams, title, "
    "content='knowledge_search', content_rowid='article_id', tokenize='unicode61')",
    "CREATE TRIGGER knowledge_fts_insert AFTER INSERT ON knowledge_search BEGIN "
    "INSERT INTO knowledge_fts(rowid, words, pinyin, grams, title) "
    "VALUES (new.article_id, new.words, new.pinyin, new.grams, new.title); END",
    "CREATE TRIGGER knowledge_fts_delete AFTER DELETE ON knowledge_search BEGIN "
    "INSERT INTO knowledge_fts(knowledge_fts, rowid, words, pinyin, grams, title) "
    "VALUES ('delete', old.article_id, old.words, old.pinyin, old.grams, old.title); END",
    "CREATE TRIGGER knowledge_fts_update AFTER UPDATE ON knowledge_search BEGIN "
    "INSERT INTO knowledge_fts(knowledge_fts, rowid, words, pinyin, grams, title) "
    "VALUES ('delete', old.article_id, old.words, old.pinyin, old.grams, old.title); "
    "INSERT INTO knowledge_fts(rowid, words, pinyin, grams, title) "
    "VALUES (new.article_id, new.words, new.pinyin, new.grams, new.title); END",
    # from the documents already there
    "INSERT INTO knowledge_fts(knowledge_fts) VALUES ('rebuild')",
)
# PostgreSQL's planner may scan the (narrow) table, de-TOASTing a vector per row, rather
# than use the GIN index: the search asks through this function, which forbids that.
HOLDING_DDL = (
    "CREATE FUNCTION knowledge_holding(q tsquery) "
    "RETURNS TABLE (article_id integer, length integer) "
    "LANGUAGE sql STABLE SET enable_seqscan = off AS "
    "$$ SELECT s.article_id, s.length FROM knowledge_search AS s WHERE s.document @@ q $$"
)
FTS_DROP = (
    "DROP TRIGGER IF EXISTS knowledge_fts_update",
    "DROP TRIGGER IF EXISTS knowledge_fts_delete",
    "DROP TRIGGER IF EXISTS knowledge_fts_insert",
    "DROP TABLE IF EXISTS knowledge_fts",
)


def _lexemes(prefixes: Sequence[str], columns: Sequence[str]) -> str:
    """The tsvector of a knowledge_search row's terms, each kind with its prefix."""
    parts = [
        f"ARRAY(SELECT '{prefix}' || t FROM unnest(string_to_array({column}, ' ')) AS t "
        "WHERE t <> '')"
        for prefix, column in zip(prefixes, columns, strict=True)
    ]
    return f"array_to_tsvector({' || '.join(parts)})"


MAX_TERM_LENGTH = 32  # hotline/knowledge/terms.py: longer terms are not counted
PAGE = 2_000
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_LATIN = re.compile(r"[0-9a-z]+")


def _title_terms(title: str) -> str:
    """As hotline/knowledge/terms.title_terms today: the Chinese characters of the
    normalised title and their bigrams, its runs of letters and digits."""
    text = unicodedata.normalize("NFKC", title).lower()
    terms: list[str] = []
    for run in _CJK.findall(text):
        terms.extend(run)
        terms.extend(run[i : i + 2] for i in range(len(run) - 1))
    terms.extend(t for t in _LATIN.findall(text) if len(t) <= MAX_TERM_LENGTH)
    return " ".join(dict.fromkeys(terms))


def _pages(sql: str) -> Iterator[list[sa.Row]]:
    """The rows of `sql` (which orders by article_id and takes :after and :n), by pages."""
    bind = op.get_bind()
    after = -1
    while True:
        rows = bind.execute(sa.text(sql), {"after": after, "n": PAGE}).all()
        if not rows:
            return
        yield rows
        after = rows[-1].article_id


def _add_titles_and_lengths() -> None:
    bind = op.get_bind()
    update = sa.text(
        "UPDATE knowledge_search SET title = :title, length = :length "
        "WHERE article_id = :article_id"
    )
    for rows in _pages(
        "SELECT s.article_id, s.words, v.title FROM knowledge_search AS s "
        "JOIN knowledge_article_version AS v "
        "ON v.article_id = s.article_id AND v.version = s.version "
        "WHERE s.article_id > :after ORDER BY s.article_id LIMIT :n"
    ):
        bind.execute(
            update,
            [
                {
                    "article_id": r.article_id,
                    "title": _title_terms(r.title),
                    "length": len(r.words.split()),
                }
                for r in rows
            ],
        )


def _count_terms() -> None:
    """knowledge_term from the documents already indexed (as search_base.term_counts)."""
    terms = sa.table(
        "knowledge_term",
        sa.column("kind", sa.String()),
        sa.column("term", sa.String()),
        sa.column("articles", sa.Integer()),
    )
    counts: Counter[tuple[str, str]] = Counter()
    for rows in _pages(
        "SELECT article_id, words, pinyin, grams FROM knowledge_search "
        "WHERE article_id > :after ORDER BY article_id LIMIT :n"
    ):
        for row in rows:
            for kind, held in (("w", row.words), ("p", row.pinyin), ("g", row.grams)):
                kept = [t for t in held.split() if len(t) <= MAX_TERM_LENGTH]
                counts.update((kind, t) for t in kept)
                if kind == "w":
                    counts[("#", "words")] += len(kept)
            counts[("#", "articles")] += 1
    items = sorted(counts.items())
    for start in range(0, len(items), PAGE):
        op.bulk_insert(
            terms,
            [{"kind": k, "term": t, "articles": n} for (k, t), n in items[start : start + PAGE]],
        )


def upgrade() -> None:
    op.create_table(
        "knowledge_term",
        sa.Column("term", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=1), nullable=False),
        sa.Column("articles", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("term", "kind"),
    )
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # made on first use before: a database searched already has it, one never searched
        # not; the triggers go before the documents change
        for ddl in FTS_DROP:
            op.execute(ddl)
    op.add_column(
        "knowledge_search", sa.Column("title", sa.Text(), server_default="", nullable=False)
    )
    op.add_column(
        "knowledge_search", sa.Column("length", sa.Integer(), server_default="0", nullable=False)
    )
    _add_titles_and_lengths()
    if sqlite:
        for ddl in FTS_DDL:
            op.execute(ddl)
    else:
        op.execute(
            "ALTER TABLE knowledge_search SET (toast_tuple_target = 128, parallel_workers = 0)"
        )
        lexemes = _lexemes(("", "p:", "g:", "t:"), ("words", "pinyin", "grams", "title"))
        op.execute(f"UPDATE knowledge_search SET document = {lexemes}")
        op.execute(HOLDING_DDL)
    _count_terms()


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        # revision 0023's search makes them again on first use
        for ddl in FTS_DROP:
            op.execute(ddl)
    else:
        op.execute("DROP FUNCTION IF EXISTS knowledge_holding(tsquery)")
        op.execute("ALTER TABLE knowledge_search RESET (toast_tuple_target, parallel_workers)")
        lexemes = _lexemes(("", "", ""), ("words", "pinyin", "grams"))
        op.execute(f"UPDATE knowledge_search SET document = {lexemes}")
    with op.batch_alter_table("knowledge_search", schema=None) as batch_op:
        batch_op.drop_column("length")
        batch_op.drop_column("title")
    op.drop_table("knowledge_term")
