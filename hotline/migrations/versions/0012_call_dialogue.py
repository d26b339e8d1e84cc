"""two-speaker transcript of a bridged call

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 22:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: calls from before seats (and the robot's) have no dialogue.
    with op.batch_alter_table("call_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dialogue", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("call_record", schema=None) as batch_op:
        batch_op.drop_column("dialogue")
