"""Alembic environment: the engine comes from the caller (``db.migrate``)."""

from __future__ import annotations

from alembic import context

from modelseal.controlplane.models import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        transaction_per_migration=False,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
