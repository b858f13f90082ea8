"""Alembic migrations of the control plane (run by ``db.migrate``)."""
