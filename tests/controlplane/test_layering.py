"""The core and the device side work without the server extra, and never import the server."""

from __future__ import annotations

import subprocess
import sys

BLOCK = "fastapi", "sqlalchemy", "alembic", "uvicorn", "pydantic_settings", "starlette"

SCRIPT = f"""
import sys
for name in {BLOCK!r}:
    sys.modules[name] = None  # importing it now raises ImportError
import modelseal, modelseal.guard, modelseal.guard.heartbeat, modelseal.license.heartbeat
import modelseal.license.licensekey, modelseal._http
from modelseal.cli import app
assert not any(m.startswith("modelseal.controlplane.") and m != "modelseal.controlplane.errors"
               for m in sys.modules), sorted(m for m in sys.modules if "controlplane" in m)
print("ok")
"""


def test_the_device_side_needs_no_server_extra() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_the_cli_says_which_extra_is_missing() -> None:
    code = (
        "import sys\n"
        f"for n in {BLOCK!r}: sys.modules[n] = None\n"
        "from modelseal.cli import main\n"
        "sys.argv = ['modelseal', 'controlplane', 'migrate']\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 7, proc.stderr
    assert "server extra" in proc.stderr
    assert "Traceback" not in proc.stderr
