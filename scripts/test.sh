#!/usr/bin/env bash
# The test command: install what is needed, then lint, type-check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
MODELSEAL_SETUP=test bash scripts/bootstrap.sh
PY=.venv/bin/python
echo "== ruff"
"$PY" -m ruff check src tests bench scripts
echo "== mypy (strict, src/)"
"$PY" -m mypy
echo "== pytest"
"$PY" -m pytest -n "${MODELSEAL_TEST_WORKERS:-2}" --durations=15 "$@"
