"""agent states

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 19:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_status",
        sa.Column("user_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("extension", sa.String(length=16), nullable=True),
        sa.Column("skills", sa.String(length=500), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idle_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("wrap_up_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("call_key", sa.String(length=200), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"]),
        sa.PrimaryKeyConstraint("user_id"),
        sa.UniqueConstraint("extension"),
    )
    with op.batch_alter_table("agent_status", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_status_state"), ["state"], unique=False)

    op.create_table(
        "agent_state_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("from_state", sa.String(length=32), nullable=False),
        sa.Column("to_state", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("call_key", sa.String(length=200), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by_user_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["by_user_id"], ["user.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("agent_state_change", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agent_state_change_at"), ["at"], unique=False)
        batch_op.create_index("ix_agent_state_change_user_id_at", ["user_id", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("agent_state_change", schema=None) as batch_op:
        batch_op.drop_index("ix_agent_state_change_user_id_at")
        batch_op.drop_index(batch_op.f("ix_agent_state_change_at"))
    op.drop_table("agent_state_change")

    with op.batch_alter_table("agent_status", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_status_state"))
    op.drop_table("agent_status")
