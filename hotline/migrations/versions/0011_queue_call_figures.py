"""queue outcome and figures of each call

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 20:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Appended after the existing columns, all nullable: a call from before seats has none.
COLUMNS = (
    ("queued_at", sa.DateTime(timezone=True)),
    ("queue_left_at", sa.DateTime(timezone=True)),
    ("queue_outcome", sa.String(length=32)),
    ("overflow_reason", sa.String(length=32)),
    ("agent_user_id", sa.Integer()),
    ("agent_extension", sa.String(length=16)),
    ("agent_answered_at", sa.DateTime(timezone=True)),
    ("hold_s", sa.Float()),
    ("wrap_up_s", sa.Float()),
    ("transfers", sa.Integer()),
    ("rings", sa.Integer()),
    ("priority", sa.Integer()),
    ("skills", sa.String(length=200)),
)


def upgrade() -> None:
    with op.batch_alter_table("call_record", schema=None) as batch_op:
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        batch_op.create_index(
            batch_op.f("ix_call_record_agent_user_id"), ["agent_user_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("call_record", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_record_agent_user_id"))
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
