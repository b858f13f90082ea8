"""Migrations: the models match them, and a failing upgrade leaves the old schema whole."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from modelseal.controlplane import db
from modelseal.controlplane.models import Base
from modelseal.controlplane.settings import Settings

BROKEN = """
import sqlalchemy as sa
from alembic import op

revision = "0999"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    op.add_column("vendors", sa.Column("extra", sa.Integer(), nullable=True))
    raise RuntimeError("the power went out")


def downgrade() -> None:
    pass
"""


def test_models_match_the_migrations(tmp_path: Path, database_url: str | None) -> None:
    engine = db.make_engine(Settings(data_dir=tmp_path, database_url=database_url))
    db.migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_a_failing_upgrade_is_rolled_back_whole(tmp_path: Path, database_url: str | None) -> None:
    engine = db.make_engine(Settings(data_dir=tmp_path, database_url=database_url))
    db.migrate(engine)
    scripts = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS, scripts)
    (scripts / "versions" / "0999_broken.py").write_text(BROKEN.format(head=db.head_revision()))
    config = Config()
    config.set_main_option("script_location", str(scripts))
    config.attributes["engine"] = engine
    with pytest.raises(RuntimeError, match="power"):
        command.upgrade(config, "head")
    assert db.current_revision(engine) == db.head_revision()
    names = inspect(engine).get_table_names()
    assert "half_done" not in names
    assert "extra" not in {c["name"] for c in inspect(engine).get_columns("vendors")}
    engine.dispose()
