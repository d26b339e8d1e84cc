"""knowledge article files: attached to a range of an article's versions

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | Sequence[str] | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "knowledge_file",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=200), nullable=False),
        sa.Column("uploaded_by", sa.Integer(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_in", sa.Integer(), nullable=True),
        sa.Column("removed_in", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["article_id"], ["knowledge_article.id"]),
        sa.ForeignKeyConstraint(["uploaded_by"], ["user.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("storage_key"),
    )
    with op.batch_alter_table("knowledge_file", schema=None) as batch_op:
        batch_op.create_index(
            "ix_knowledge_file_article_added", ["article_id", "added_in"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("knowledge_file", schema=None) as batch_op:
        batch_op.drop_index("ix_knowledge_file_article_added")
    op.drop_table("knowledge_file")
