"""kamailio as the seats' registrar: location, kamailio_version, and the subscriber view

Kamailio (deploy/kamailio/kamailio.cfg with WITH_SEATS) keeps the phones' bindings in
``location`` (usrloc, written through) and authenticates REGISTERs against ``subscriber``: a
view over ``seat`` (username = extension, domain = realm, ha1 = the MD5 digest hash; only
enabled seats), so that seats are managed in one place, by ``hotline seats`` and
/admin/seats. The view is created on PostgreSQL only: SQLite is the embedded mode, where the
edge itself is the registrar. The tables exist on both backends (the models declare them).

A later migration that alters ``seat.extension``, ``realm``, ``ha1_md5`` or ``enabled`` on
PostgreSQL must drop the view first and create it again (``SUBSCRIBER_VIEW`` below).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 22:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# auth_db's columns: the password column is empty (calculate_ha1 0 reads ``ha1``), ha1b is
# the user@domain variant no seat's phone uses.
SUBSCRIBER_VIEW = """
CREATE VIEW subscriber AS
SELECT id, extension::varchar(64) AS username, realm::varchar(64) AS domain,
       ''::varchar(64) AS password, ha1_md5::varchar(128) AS ha1,
       ''::varchar(128) AS ha1b
FROM seat
WHERE enabled
"""


def upgrade() -> None:
    op.create_table(
        "location",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ruid", sa.String(length=64), server_default="", nullable=False),
        sa.Column("username", sa.String(length=64), server_default="", nullable=False),
        sa.Column("domain", sa.String(length=64), nullable=True),
        sa.Column("contact", sa.String(length=512), server_default="", nullable=False),
        sa.Column("received", sa.String(length=128), nullable=True),
        sa.Column("path", sa.String(length=512), nullable=True),
        sa.Column("expires", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("q", sa.Float(), server_default="1.0", nullable=False),
        sa.Column(
            "callid", sa.String(length=255), server_default="Default-Call-ID", nullable=False
        ),
        sa.Column("cseq", sa.Integer(), server_default="1", nullable=False),
        sa.Column("last_modified", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("flags", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cflags", sa.Integer(), server_default="0", nullable=False),
        sa.Column("user_agent", sa.String(length=255), server_default="", nullable=False),
        sa.Column("socket", sa.String(length=64), nullable=True),
        sa.Column("methods", sa.Integer(), nullable=True),
        sa.Column("instance", sa.String(length=255), nullable=True),
        sa.Column("reg_id", sa.Integer(), server_default="0", nullable=False),
        sa.Column("server_id", sa.Integer(), server_default="0", nullable=False),
        sa.Column("connection_id", sa.Integer(), server_default="0", nullable=False),
        sa.Column("keepalive", sa.Integer(), server_default="0", nullable=False),
        sa.Column("partition", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ruid", name="location_ruid_idx"),
    )
    with op.batch_alter_table("location", schema=None) as batch_op:
        batch_op.create_index(
            "location_account_contact_idx", ["username", "domain", "contact"], unique=False
        )
        batch_op.create_index("location_connection_idx", ["server_id", "connection_id"])
        batch_op.create_index("location_expires_idx", ["expires"], unique=False)
    version = op.create_table(
        "kamailio_version",
        sa.Column("table_name", sa.String(length=32), nullable=False),
        sa.Column("table_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("table_name"),
    )
    op.bulk_insert(
        version,
        [
            {"table_name": "location", "table_version": 9},
            {"table_name": "subscriber", "table_version": 7},
        ],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(SUBSCRIBER_VIEW)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP VIEW IF EXISTS subscriber")
    op.drop_table("kamailio_version")
    with op.batch_alter_table("location", schema=None) as batch_op:
        batch_op.drop_index("location_expires_idx")
        batch_op.drop_index("location_connection_idx")
        batch_op.drop_index("location_account_contact_idx")
    op.drop_table("location")
