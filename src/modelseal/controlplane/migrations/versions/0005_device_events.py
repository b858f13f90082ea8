"""device audit records shipped by heartbeats (issue #12, the refusals report)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("events_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("events_hash", sa.String(length=64), nullable=True))
    op.create_table(
        "device_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("vendor_id", sa.String(length=40), nullable=False),
        sa.Column("license_id", sa.String(length=40), nullable=False),
        sa.Column("device_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.String(length=40), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"]),
        sa.ForeignKeyConstraint(["license_id"], ["licenses.id"]),
        sa.ForeignKeyConstraint(["vendor_id"], ["vendors.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", "hash"),
    )
    op.create_index("ix_device_events_vendor_at", "device_events", ["vendor_id", "at"])
    op.create_index("ix_device_events_license_id", "device_events", ["license_id"])


def downgrade() -> None:
    op.drop_index("ix_device_events_license_id", table_name="device_events")
    op.drop_index("ix_device_events_vendor_at", table_name="device_events")
    op.drop_table("device_events")
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("events_hash")
        batch.drop_column("events_seq")
