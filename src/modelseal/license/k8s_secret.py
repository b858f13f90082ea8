"""A license as a Kubernetes Secret, and the pod snippet that mounts it.

Why a Secret mounted as a file, not an environment variable holding the
token: the kubelet refreshes a mounted Secret's file when the Secret
changes (a renewed or re-issued license reaches running pods without a
restart), and ``modelseal serve`` reads a path, from ``MODELSEAL_LICENSE``.
The mount is read-only, so a renewal a heartbeat brings stays in the
Guard's memory (it cannot write the file back); apply the re-downloaded
Secret after a renewal so that a restarted pod starts from it.

The manifest is written by hand (no YAML library on the device side): every
value is either a validated RFC 1123 name or base64, so nothing needs
quoting beyond what is done here. ``tests/license/test_k8s_secret.py``
checks both documents against Kubernetes' strict schemas.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Final

from modelseal.errors import InvalidArgumentError

MOUNT_DIR: Final = "/etc/modelseal/license"
FILE_NAME: Final = "license.jwt"
_NAME: Final = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN: Final = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def check_name(value: str, what: str, *, label: bool = True) -> str:
    pattern = _NAME if label else _SUBDOMAIN
    if not pattern.fullmatch(value):
        raise InvalidArgumentError(
            f"{what} {value!r} is not a Kubernetes name (lower-case letters, digits and '-',"
            f" at most {63 if label else 253} characters, starting and ending alphanumeric)"
        )
    return value


def default_name(license_id: str) -> str:
    return check_name("modelseal-license-" + license_id.lower().replace("_", "-")[:44], "name")


def secret_manifest(token: str, *, name: str, namespace: str, labels: dict[str, str]) -> str:
    """An ``Opaque`` Secret holding the license as ``license.jwt`` (YAML)."""
    check_name(name, "the Secret name", label=False)
    check_name(namespace, "the namespace")
    data = base64.b64encode(token.strip().encode() + b"\n").decode()
    lines = [
        "apiVersion: v1",
        "kind: Secret",
        "metadata:",
        f"  name: {name}",
        f"  namespace: {namespace}",
    ]
    if labels:
        lines.append("  labels:")
        # JSON strings are valid YAML double-quoted scalars
        lines += [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(labels.items())]
    lines += ["type: Opaque", "data:", f"  {FILE_NAME}: {data}", ""]
    return "\n".join(lines)


def mount_snippet(name: str, *, container: str = "model") -> str:
    """The pod spec parts that mount the Secret read-only and point serve at it (YAML)."""
    check_name(name, "the Secret name", label=False)
    return "\n".join(
        [
            "# in the pod template's spec:",
            "volumes:",
            "  - name: modelseal-license",
            "    secret:",
            f"      secretName: {name}",
            "      defaultMode: 0440",
            "containers:",
            f"  - name: {container}",
            "    env:",
            "      - name: MODELSEAL_LICENSE",
            f"        value: {MOUNT_DIR}/{FILE_NAME}",
            "    volumeMounts:",
            "      - name: modelseal-license",
            f"        mountPath: {MOUNT_DIR}",
            "        readOnly: true",
            "",
        ]
    )
