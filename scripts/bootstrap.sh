#!/usr/bin/env bash
# Create .venv and install modelseal with every framework extra and the dev tools.
# torch==2.13.0 goes in first: it is a CPU wheel on disk on our machines, and any
# other torch requirement resolved from PyPI would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
STAMP="$VENV/.modelseal-installed"

bash scripts/system-packages.sh "${MODELSEAL_SETUP:-run}"
# the web console's htmx and Chart.js, from npm into the package's static dir (run and test)
bash scripts/console-assets.sh

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when the dependency list changed since the last bootstrap.
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ scripts/bootstrap.sh -nt "$STAMP" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
    "$VENV/bin/python" -m pip install --quiet -e ".[torch,safetensors,onnx,paddle,server,serve,gateway,deploy,kubernetes,hsm,dev]"
    touch "$STAMP"
fi
