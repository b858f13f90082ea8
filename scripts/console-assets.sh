#!/usr/bin/env bash
# The web console's front-end packages (htmx, Chart.js), from the npm registry at set-up
# time: `npm ci` against the committed package-lock.json, then the minified files are
# copied into the package's static dir, which git ignores (third-party minified files are
# never committed). Without npm it says so and goes on: the console then shows a banner
# naming this script, and the browser tests (which need the assets) fail loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=src/modelseal/controlplane/console/static/vendor
if ! command -v npm >/dev/null; then
    echo "set-up: npm is missing; the web console runs without charts and htmx until" \
        "'bash scripts/console-assets.sh' runs with npm (apt-get install npm)" >&2
    exit 0
fi
# --ignore-scripts: the packages are plain files; nothing of theirs runs here
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi
mkdir -p "$dest"
cp node_modules/htmx.org/dist/htmx.min.js "$dest/htmx.min.js"
cp node_modules/chart.js/dist/chart.umd.min.js "$dest/chart.umd.min.js"
# the versions the console reports on its "about" line and the tests check
node -e 'const l=require("./package-lock.json").packages;
console.log(JSON.stringify({"htmx.org":l["node_modules/htmx.org"].version,
"chart.js":l["node_modules/chart.js"].version}))' > "$dest/versions.json"
