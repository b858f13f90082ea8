"""Rule: two users of a vendor never share a name up to case and width, even in a race.

``alice``, ``Alice`` and ``ａｌｉｃｅ`` are one name to a reader of the audit log
and the console. ``create_user`` checks first (to name the holder in its
message), but two requests can both pass that check; the database's unique
``(vendor_id, username_key)`` refuses the second, and the refusal is the same
typed conflict (409), never a 500. Migration 0006 fills the key for the users
that exist, and refuses to run over two names that already collide.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from modelseal.controlplane import db
from modelseal.controlplane.errors import ConflictError
from modelseal.controlplane.services import people
from modelseal.controlplane.settings import Settings


def _vendor_id(session: sa.orm.Session) -> str:
    from modelseal.controlplane.models import Vendor

    return str(session.execute(sa.select(Vendor.id)).scalars().first())


@pytest.fixture
def setup(tmp_path: Path, database_url: str | None) -> tuple[Settings, sa.Engine]:
    from modelseal.controlplane.secretbox import SecretBox, load_or_create_master_key
    from modelseal.controlplane.services.vendors import init_vendor

    settings = Settings(data_dir=tmp_path / "cp", database_url=database_url)
    engine = db.make_engine(settings)
    db.migrate(engine)
    box = SecretBox(load_or_create_master_key(settings.master_key_path))
    with db.transaction(db.session_factory(engine)) as session:
        init_vendor(session, box, name="acme", kty="ed25519")
    return settings, engine


@pytest.mark.parametrize("twin", ["Alice", "ＡＬＩＣＥ", "alice"])
def test_a_raced_twin_is_refused_by_the_database_as_a_conflict(
    setup: tuple[Settings, sa.Engine], monkeypatch: pytest.MonkeyPatch, twin: str
) -> None:
    _, engine = setup
    factory = db.session_factory(engine)
    with db.transaction(factory) as session:
        people.create_user(session, _vendor_id(session), username="alice", role="issuer")
    # the race: the second request's check ran before the first one committed
    monkeypatch.setattr(people, "_name_holder", lambda *_: None)
    with db.transaction(factory) as session:
        with pytest.raises(ConflictError, match="just created"):
            people.create_user(session, _vendor_id(session), username=twin, role="auditor")
        # the session is still usable: the refusal rolled back its savepoint only
        people.create_user(session, _vendor_id(session), username="bob", role="auditor")
    with factory() as session:
        names = sorted(session.execute(sa.text("SELECT username FROM users")).scalars())
    assert names == ["alice", "bob"]
    engine.dispose()


def test_the_check_names_the_holder(setup: tuple[Settings, sa.Engine]) -> None:
    _, engine = setup
    factory = db.session_factory(engine)
    with db.transaction(factory) as session:
        people.create_user(session, _vendor_id(session), username="Alice", role="issuer")
    with (
        db.transaction(factory) as session,
        pytest.raises(ConflictError, match="'Alice' exists: names that differ only"),
    ):
        people.create_user(session, _vendor_id(session), username="ａｌｉｃｅ", role="issuer")
    engine.dispose()


def _at_0005(tmp_path: Path, database_url: str | None, *names: str) -> sa.Engine:
    """A database at revision 0005 with one vendor and users of these names."""
    engine = db.make_engine(Settings(data_dir=tmp_path / "old", database_url=database_url))
    command.upgrade(db._alembic_config(engine), "0005")
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO vendors (id, name, created_at) VALUES ('ven_1', 'acme', 0)")
        )
    for n, name in enumerate(names):
        _add_user(engine, f"usr_{n}", name)
    return engine


def _add_user(engine: sa.Engine, uid: str, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO users (id, vendor_id, username, role, password_hash, totp_enabled,"
                " totp_last_step, failed_logins, created_at)"
                " VALUES (:id, 'ven_1', :name, 'issuer', 'h', false, 0, 0, 0)"
            ),
            {"id": uid, "name": name},
        )


def test_migration_0006_fills_the_key_of_existing_users(
    tmp_path: Path, database_url: str | None
) -> None:
    engine = _at_0005(tmp_path, database_url, "Alice", "bob")
    db.migrate(engine)
    with engine.connect() as conn:
        keys = dict(conn.execute(sa.text("SELECT username, username_key FROM users")).all())
    assert keys == {"Alice": people.name_key("alice"), "bob": people.name_key("BOB")}
    engine.dispose()


def test_migration_0006_refuses_names_that_already_collide(
    tmp_path: Path, database_url: str | None
) -> None:
    engine = _at_0005(tmp_path, database_url, "alice", "ALICE")
    with pytest.raises(RuntimeError, match="differ only by case or width"):
        db.migrate(engine)
    assert db.current_revision(engine) == "0005"  # nothing half-done
    engine.dispose()
