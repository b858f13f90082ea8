"""``modelseal controlplane init|migrate|--print-config`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from modelseal.controlplane import db
from tests.controlplane.conftest import db_args, run_cli


def test_init_writes_a_0600_token_once_and_refuses_a_second_time(
    tmp_path: Path, database_url: str | None
) -> None:
    args = db_args(tmp_path / "cp", database_url)
    first = run_cli(
        "controlplane",
        "init",
        *args,
        "--vendor",
        "acme",
        "--alg",
        "sm2",
        "--token-out",
        str(tmp_path / "t1"),
    )
    token = (tmp_path / "t1").read_text().strip()
    assert token.startswith("mst_")
    assert (tmp_path / "t1").stat().st_mode & 0o777 == 0o600
    assert token not in first.stdout + first.stderr  # printed nowhere
    # the first owner's generated password is printed once (tested to log in: test_unlock_mfa)
    shown = first.stdout.split("password (shown once): ", 1)[1].split()[0]
    assert len(shown) >= 20
    if database_url is None:
        assert (tmp_path / "cp" / "master.key").stat().st_mode & 0o777 == 0o600
    again = run_cli(
        "controlplane",
        "init",
        *args,
        "--vendor",
        "acme",
        "--token-out",
        str(tmp_path / "t2"),
        check=False,
    )
    assert again.returncode == 24
    assert again.stderr.strip() == "error: vendor 'acme' already exists"
    assert not (tmp_path / "t2").exists()
    migrated = run_cli("controlplane", "migrate", *args)
    assert f"revision {db.head_revision()}" in migrated.stdout


def test_print_config_masks_secrets(tmp_path: Path) -> None:
    proc = run_cli(
        "controlplane",
        "--database-url",
        "postgresql://cp:hunter2@127.0.0.1/lic",
        "--port",
        "8411",
        "--print-config",
        env={"MODELSEAL_DATA_DIR": str(tmp_path)},
    )
    config = json.loads(proc.stdout)
    assert "hunter2" not in proc.stdout
    assert config["database_url"] == "postgresql+psycopg://cp:***@127.0.0.1/lic"
    assert config["port"] == 8411
    assert config["data_dir"] == str(tmp_path)


def test_admin_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    token = tmp_path / "t"
    token.write_text("mst_x\n")
    proc = run_cli(
        "admin",
        "--server",
        "http://127.0.0.1:9",
        "--token-file",
        str(token),
        "plans",
        "list",
        check=False,
    )
    assert proc.returncode == 21
    assert proc.stderr.startswith("error: cannot reach") and proc.stderr.count("\n") == 1
    missing = run_cli(
        "admin",
        "plans",
        "list",
        check=False,
        env={"MODELSEAL_SERVER": "", "MODELSEAL_TOKEN_FILE": ""},
    )
    assert missing.returncode == 2
