"""call-backs of calls abandoned in the queue (漏话回拨)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 23:15:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call_record", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("callback_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("called_back_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("called_back_by", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("callback_outcome", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("call_record", schema=None) as batch_op:
        batch_op.drop_column("callback_outcome")
        batch_op.drop_column("called_back_by")
        batch_op.drop_column("called_back_at")
        batch_op.drop_column("callback_attempts")
