"""users.username_key: confusable usernames refused by the database, not only by a check

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import hashlib
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _key(username: str) -> str:
    # the same as services.people.name_key at this revision (migrations do not import
    # the application: a later change there must not rewrite history here)
    folded = unicodedata.normalize("NFKC", username).casefold()
    return hashlib.sha256(folded.encode("utf-8", "surrogatepass")).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("username_key", sa.String(length=64), nullable=True))
    users = sa.table(
        "users",
        sa.column("id", sa.String()),
        sa.column("vendor_id", sa.String()),
        sa.column("username", sa.String()),
        sa.column("username_key", sa.String()),
    )
    bind = op.get_bind()
    seen: dict[tuple[str, str], str] = {}
    for row in bind.execute(sa.select(users.c.id, users.c.vendor_id, users.c.username)):
        key = _key(row.username)
        twin = seen.setdefault((row.vendor_id, key), row.username)
        if twin != row.username:
            raise RuntimeError(
                f"vendor {row.vendor_id} has users {twin!r} and {row.username!r}, which differ "
                "only by case or width: rename one (or delete it) and run the migration again"
            )
        bind.execute(users.update().where(users.c.id == row.id).values(username_key=key))
    with op.batch_alter_table("users") as batch:
        batch.alter_column("username_key", existing_type=sa.String(length=64), nullable=False)
        batch.create_unique_constraint(
            "uq_users_vendor_id_username_key", ["vendor_id", "username_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_vendor_id_username_key", type_="unique")
        batch.drop_column("username_key")
