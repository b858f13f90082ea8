#!/usr/bin/env bash
# The main job: install, then the whole system on this machine (modelseal up):
# control plane on SQLite, a licensed demo model service, the gateway. Ctrl-C stops it;
# running it again reuses .demo/system. `make demo` is the offline library demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m modelseal up --data-dir .demo/system "$@"
