"""The model image's entry point: ``modelseal serve`` with what the runtime mounted.

Runs inside the container, under tini (PID 1, so SIGTERM reaches the server
at once). The image holds the model (or expects it mounted), the handler
and modelseal, but never a license or a key: those arrive at run time, in
the places the Kubernetes manifests and the podman backend both use
(docs/deploy.md, "Images"):

- the license at ``$MODELSEAL_LICENSE`` (default
  ``/etc/modelseal/license/license.jwt``, a Secret or a read-only bind mount);
- the gateway's SM2 public key at ``$MODELSEAL_ENVELOPE_KEY`` (default
  ``/etc/modelseal/keys/envelope-key.pub``);
- the vendor's key at ``$MODELSEAL_TRUST`` (default the one built into the
  image, else ``/etc/modelseal/keys/trust.pub`` or ``trust.json``).

What is missing stops the container with one line and exit code 3, before
Python loads anything heavy; everything else (a license for another device,
an expired one) is ``modelseal serve``'s own one-line refusal. Arguments
given to the container are appended to ``modelseal serve``'s (``--workers 2``).

Only the standard library is imported here: the image's start-up cost and
failure modes stay those of ``modelseal serve``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Final

#: Where the runtime puts the license and keys: the same paths as the
#: Kubernetes manifests (modelseal.deploy.manifests; a test keeps them equal).
LICENSE_FILE: Final = "/etc/modelseal/license/license.jwt"
KEYS_DIR: Final = "/etc/modelseal/keys"
ENVELOPE_KEY_FILE: Final = f"{KEYS_DIR}/envelope-key.pub"
EXIT_INPUT: Final = 3


class LaunchError(Exception):
    """What is missing, in one line (exit code 3)."""


def _file(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.R_OK)


def serve_argv(env: Mapping[str, str], extra: Sequence[str]) -> list[str]:
    """``modelseal serve`` arguments from the environment; :class:`LaunchError` if incomplete."""
    model = env.get("MODELSEAL_MODEL", "")
    if not model or not _file(model):
        raise LaunchError(
            f"no model at {model or '$MODELSEAL_MODEL'}: this image expects the sealed model "
            "mounted there (read-only)"
        )
    license_file = env.get("MODELSEAL_LICENSE") or LICENSE_FILE
    if not _file(license_file):
        raise LaunchError(
            f"no license at {license_file}: mount the deployment's license there read-only "
            "(a Kubernetes Secret, or podman -v "
            "license.jwt:/etc/modelseal/license/license.jwt:ro); images never contain one"
        )
    trust = env.get("MODELSEAL_TRUST") or env.get("MODELSEAL_IMAGE_TRUST") or ""
    if not trust:
        trust = next(
            (p for p in (f"{KEYS_DIR}/trust.pub", f"{KEYS_DIR}/trust.json") if _file(p)), ""
        )
    if not trust or not os.path.exists(trust):
        raise LaunchError(
            "no vendor key to verify the license: build the image with --trust vendor.pub "
            f"or mount it at {KEYS_DIR}/trust.pub"
        )
    envelope = env.get("MODELSEAL_ENVELOPE_KEY") or (
        ENVELOPE_KEY_FILE if _file(ENVELOPE_KEY_FILE) else ""
    )
    if envelope and not _file(envelope):
        raise LaunchError(f"no gateway envelope key at {envelope}")
    if not envelope and env.get("MODELSEAL_IMAGE_ALLOW_PLAIN") != "1":
        raise LaunchError(
            f"no gateway envelope key at {ENVELOPE_KEY_FILE}: this image answers only in "
            "envelopes sealed for the gateway (mount its SM2 public key there)"
        )
    argv = ["serve", model, "--license", license_file, "--trust", trust]
    if envelope:
        argv += ["--envelope-key", envelope]
    for option, name in (
        ("--handler", "MODELSEAL_IMAGE_HANDLER"),
        ("--framework", "MODELSEAL_IMAGE_FRAMEWORK"),
        ("--name", "MODELSEAL_IMAGE_NAME"),
    ):
        if env.get(name):
            argv += [option, env[name]]
    argv += ["--host", env.get("MODELSEAL_HOST") or "0.0.0.0"]  # noqa: S104 - a container's port
    argv += ["--port", env.get("MODELSEAL_PORT") or "8080"]
    return [*argv, *extra]


def main(argv: Sequence[str] | None = None) -> None:
    extra = list(sys.argv[1:] if argv is None else argv)
    try:
        args = serve_argv(os.environ, extra)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_INPUT) from None
    sys.stdout.flush()
    # exec, not a child: tini's SIGTERM then reaches the server itself.
    os.execv(sys.executable, [sys.executable, "-m", "modelseal", *args])  # noqa: S606


if __name__ == "__main__":
    main()
