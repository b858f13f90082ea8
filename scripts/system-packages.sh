#!/usr/bin/env bash
# Debian packages the set-up needs, installed when missing (root, or sudo without a password).
#   run:  what `make run` uses (curl, to try the printed prediction line)
#   test: what the tests drive for real: strace (no plaintext on disk), openssl (interop
#         oracle), softhsm2 (PKCS#11 signing keys), podman + runc + debootstrap (containers),
#         chromium (the console's browser tests drive Debian's Chromium, never a downloaded one)
# Without apt-get or root rights it says what is missing and goes on: those tests then
# skip with the reason, and CI (.ci/run) requires them.
set -euo pipefail
want=(curl)
if [ "${1:-run}" = "test" ]; then
    want+=(strace openssl softhsm2 podman runc debootstrap chromium)
fi
missing=()
for pkg in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "set-up: no apt-get here; install these yourself: ${missing[*]}" >&2
    exit 0
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if sudo -n true 2>/dev/null; then as_root=(sudo -n); else
        echo "set-up: not root; install these yourself (apt-get install ${missing[*]})" >&2
        exit 0
    fi
fi
echo "set-up: installing Debian packages: ${missing[*]}" >&2
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
