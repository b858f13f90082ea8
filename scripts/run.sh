#!/usr/bin/env bash
# The main job: install, then run the demo end to end on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python scripts/demo.py "$@"
