"""leases, heartbeat freshness and device flags

Revision ID: 0002
Revises: 0001

Adds the usage ledger (``licenses.calls_leased``, ``devices.lease_end`` and
``lease_exp``), the plan's offline allowance, heartbeat freshness
(``devices.hb_time``/``hb_nonces``) and the device flag the heartbeat path
sets when a device's audit head or usage goes backwards. Columns only, all
nullable or with a server default, so existing rows stay valid.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("offline_calls", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("licenses") as batch:
        batch.add_column(
            sa.Column("calls_leased", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("hb_time", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("hb_nonces", sa.Text(), nullable=True))
        batch.add_column(sa.Column("flag", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("flagged_at", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("lease_end", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("lease_exp", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        for name in ("lease_exp", "lease_end", "flagged_at", "flag", "hb_nonces", "hb_time"):
            batch.drop_column(name)
    with op.batch_alter_table("licenses") as batch:
        batch.drop_column("calls_leased")
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("offline_calls")
