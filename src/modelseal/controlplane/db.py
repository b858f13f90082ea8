"""Engines, sessions and migrations.

SQLite (the default, one file in the data directory) runs in WAL mode with
every transaction started as ``BEGIN IMMEDIATE``: writers queue on the
database lock up front instead of failing with ``database is locked`` when
a read transaction tries to upgrade, which is what makes the device-limit
check-then-insert atomic there. A connection marked read-only
(:func:`read_session`, for long reads such as reports) begins a deferred
transaction instead: a WAL reader holds no lock that writers wait on, so a
report streamed to a slow client does not stop heartbeats or activations.
On PostgreSQL the same check takes a row
lock on the license (``SELECT ... FOR UPDATE``).

Migrations are Alembic's, run in one transaction (DDL is transactional on
both engines), so a crash mid-upgrade leaves the previous schema, never
half of the new one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from modelseal.controlplane.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"
#: execution option of a connection that only reads (SQLite: a deferred BEGIN)
READ_ONLY = "modelseal_read_only"


def make_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url
    if settings.is_sqlite:
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # let SQLAlchemy, not pysqlite, decide where transactions begin
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session for reading only, on a connection that never takes SQLite's write lock.

    Nothing it does is committed (it is rolled back at the end); changes made
    through it would not be audited either (no audit hooks on this session).
    """
    with (
        engine.connect().execution_options(**{READ_ONLY: True}) as conn,
        Session(bind=conn) as session,
    ):
        try:
            yield session
        finally:
            session.rollback()


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> str | None:
    """Upgrade the schema to the newest revision; returns that revision."""
    from alembic import command

    command.upgrade(_alembic_config(engine), "head")
    return current_revision(engine)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()
