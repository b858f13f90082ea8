#!/usr/bin/env bash
# The main job: install, then the whole system on this machine (modelseal up):
# the control plane on SQLite, a sealed demo model deployed through its platform with
# the local backend, the gateway following it; prints the console URL, the owner's
# login and a curl line. Ctrl-C stops it; running it again reuses .demo/system.
# `make demo` (modelseal demo) is the offline library demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m modelseal up --data-dir .demo/system "$@"
