"""console call control: commands to the edge, and the bridged call's control state

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 22:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_command",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.String(length=255), nullable=False),
        sa.Column("edge_id", sa.String(length=36), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.Integer(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("call_command", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_call_command_call_id"), ["call_id"], unique=False)
        batch_op.create_index("ix_call_command_state_call", ["state", "call_id"], unique=False)
    # Existing rows get "" and 0 (server defaults), as the model's defaults.
    with op.batch_alter_table("call_record", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("control", sa.String(length=2000), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("control_seq", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("call_record", schema=None) as batch_op:
        batch_op.drop_column("control_seq")
        batch_op.drop_column("control")
    with op.batch_alter_table("call_command", schema=None) as batch_op:
        batch_op.drop_index("ix_call_command_state_call")
        batch_op.drop_index(batch_op.f("ix_call_command_call_id"))
    op.drop_table("call_command")
