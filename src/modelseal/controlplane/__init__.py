"""The license server ("control plane", Licensing area): docs/controlplane.md.

Layout: ``settings`` (one pydantic-settings class), ``db`` (engines,
sessions, migrations), ``models`` (ORM), ``schemas`` (pydantic I/O),
``services/`` (all the logic; routes never hold SQL), ``routes/`` (thin
FastAPI routers), ``app`` (the application factory).

Needs the ``server`` extra (FastAPI, SQLAlchemy, Alembic, uvicorn,
pydantic-settings, psycopg). Nothing in the core imports this package;
``import modelseal`` works without the extra.
"""
