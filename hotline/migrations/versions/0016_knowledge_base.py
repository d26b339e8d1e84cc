"""the knowledge base (知识库): articles, their immutable versions, search documents

The search documents' GIN index over a tsvector serves PostgreSQL. SQLite searches them
through an FTS5 table that hotline/knowledge/search.py creates on first use (alembic's schema
comparison would report FTS5's shadow tables as strays); the downgrade drops it.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 02:33:03

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "knowledge_article",
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("category_code", sa.String(length=6), nullable=False),
        sa.Column("owner_unit_id", sa.Integer(), nullable=False),
        sa.Column("policy_source", sa.String(length=200), nullable=True),
        sa.Column("document_number", sa.String(length=100), nullable=True),
        sa.Column("region", sa.String(length=64), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_due", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "in_review",
                "published",
                "retired",
                name="articlestatus",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("published_version", sa.Integer(), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_by", sa.Integer(), nullable=True),
        sa.Column("review_note", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["user.id"],
        ),
        sa.ForeignKeyConstraint(
            ["owner_unit_id"],
            ["unit.id"],
        ),
        sa.ForeignKeyConstraint(
            ["published_by"],
            ["user.id"],
        ),
        sa.ForeignKeyConstraint(
            ["updated_by"],
            ["user.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("knowledge_article", schema=None) as batch_op:
        batch_op.create_index("ix_knowledge_article_category_code", ["category_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_knowledge_article_number"), ["number"], unique=True)
        batch_op.create_index("ix_knowledge_article_owner_unit_id", ["owner_unit_id"], unique=False)
        batch_op.create_index("ix_knowledge_article_review_due", ["review_due"], unique=False)
        batch_op.create_index(batch_op.f("ix_knowledge_article_status"), ["status"], unique=False)

    op.create_table(
        "knowledge_article_version",
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("category_code", sa.String(length=6), nullable=False),
        sa.Column("owner_unit_id", sa.Integer(), nullable=False),
        sa.Column("policy_source", sa.String(length=200), nullable=True),
        sa.Column("document_number", sa.String(length=100), nullable=True),
        sa.Column("region", sa.String(length=64), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_due", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("saved_by", sa.Integer(), nullable=False),
        sa.Column("changed", sa.JSON().with_variant(sa.JSON(), "postgresql"), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["knowledge_article.id"],
        ),
        sa.ForeignKeyConstraint(
            ["owner_unit_id"],
            ["unit.id"],
        ),
        sa.ForeignKeyConstraint(
            ["saved_by"],
            ["user.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("article_id", "version"),
    )
    op.create_table(
        "knowledge_search",
        sa.Column("article_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("words", sa.Text(), nullable=False),
        sa.Column("pinyin", sa.Text(), nullable=False),
        sa.Column("grams", sa.Text(), nullable=False),
        sa.Column(
            "document", sa.Text().with_variant(postgresql.TSVECTOR(), "postgresql"), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["knowledge_article.id"],
        ),
        sa.PrimaryKeyConstraint("article_id"),
    )
    with op.batch_alter_table("knowledge_search", schema=None) as batch_op:
        batch_op.create_index(
            "ix_knowledge_search_document", ["document"], unique=False, postgresql_using="gin"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for kind, name in (
            ("TRIGGER", "knowledge_fts_update"),
            ("TRIGGER", "knowledge_fts_delete"),
            ("TRIGGER", "knowledge_fts_insert"),
            ("TABLE", "knowledge_fts"),
        ):
            op.execute(f"DROP {kind} IF EXISTS {name}")
    with op.batch_alter_table("knowledge_search", schema=None) as batch_op:
        batch_op.drop_index("ix_knowledge_search_document", postgresql_using="gin")

    op.drop_table("knowledge_search")
    op.drop_table("knowledge_article_version")
    with op.batch_alter_table("knowledge_article", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_knowledge_article_status"))
        batch_op.drop_index("ix_knowledge_article_review_due")
        batch_op.drop_index("ix_knowledge_article_owner_unit_id")
        batch_op.drop_index(batch_op.f("ix_knowledge_article_number"))
        batch_op.drop_index("ix_knowledge_article_category_code")

    op.drop_table("knowledge_article")
