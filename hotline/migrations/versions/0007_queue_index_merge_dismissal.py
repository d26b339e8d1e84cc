"""queue index and merge-candidate dismissal

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 19:30:00

The manual-dispatch queue's order as an index (status, urgency, created_at, id), so a page
of the queue is read in index order instead of sorting the whole queue; and
``merge_dismissal``, a dispatcher's "not the same request" for a pair of tickets.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ticket_status_urgency_created",
            ["status", "urgency", "created_at", "id"],
            unique=False,
        )

    op.create_table(
        "merge_dismissal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("other_ticket_id", sa.Integer(), nullable=False),
        sa.Column("by_user_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=True),
        sa.CheckConstraint("ticket_id < other_ticket_id", name="ck_merge_dismissal_order"),
        sa.ForeignKeyConstraint(["by_user_id"], ["user.id"]),
        sa.ForeignKeyConstraint(["other_ticket_id"], ["ticket.id"]),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id", "other_ticket_id", name="uq_merge_dismissal_pair"),
    )
    with op.batch_alter_table("merge_dismissal", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_merge_dismissal_other_ticket_id"), ["other_ticket_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("merge_dismissal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_merge_dismissal_other_ticket_id"))
    op.drop_table("merge_dismissal")

    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_index("ix_ticket_status_urgency_created")
