"""The offline demo (`make demo`): `modelseal demo` in .demo/offline/ of the project directory.

The demo itself is src/modelseal/system/offline_demo.py (also `modelseal demo`);
the whole system (control plane, platform deployment, gateway) is `make run`
(`modelseal up`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    work = str(ROOT / ".demo" / "offline")
    argv = [sys.executable, "-m", "modelseal", "demo", "--work-dir", work]
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter, fixed arguments
