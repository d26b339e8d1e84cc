"""SIP seats and registrations

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 19:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "seat",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("extension", sa.String(length=16), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("realm", sa.String(length=100), nullable=False),
        sa.Column("ha1_md5", sa.String(length=32), nullable=False),
        sa.Column("ha1_sha256", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("seat", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_seat_extension"), ["extension"], unique=True)

    op.create_table(
        "seat_registration",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("extension", sa.String(length=16), nullable=False),
        sa.Column("contact", sa.String(length=500), nullable=False),
        sa.Column("received_host", sa.String(length=64), nullable=False),
        sa.Column("received_port", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("call_id", sa.String(length=255), nullable=False),
        sa.Column("cseq", sa.Integer(), nullable=False),
        sa.Column("user_agent", sa.String(length=255), nullable=False),
        sa.Column("edge_id", sa.String(length=36), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("extension", "contact", name="uq_seat_registration_contact"),
    )
    with op.batch_alter_table("seat_registration", schema=None) as batch_op:
        batch_op.create_index(
            "ix_seat_registration_extension_expires", ["extension", "expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("seat_registration", schema=None) as batch_op:
        batch_op.drop_index("ix_seat_registration_extension_expires")
    op.drop_table("seat_registration")
    with op.batch_alter_table("seat", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_seat_extension"))
    op.drop_table("seat")
