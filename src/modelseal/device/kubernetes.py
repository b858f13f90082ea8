"""Kubernetes cluster identity: the uid of the ``kube-system`` namespace.

Every cluster has a ``kube-system`` namespace whose ``metadata.uid`` the API
server assigns once at creation, so it names the cluster (not the node) and
survives node replacement: the right thing to bind a license to when the
manager runs model services as Deployments.

The pod's service account needs ``get`` on ``namespaces/kube-system``
(namespaces are cluster-scoped, so a ClusterRole); without it the API answers
403 and the component is simply absent. The request goes to the API server
named by ``KUBERNETES_SERVICE_HOST``/``PORT`` and is verified against the
service-account CA; there is no fallback to an unverified connection.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from modelseal.device._io import read_text

#: (url, bearer token, CA bundle path, timeout) -> response body. Injected by tests.
KubeFetch = Callable[[str, str, Path, float], bytes]

SERVICE_ACCOUNT_DIR: Final = "var/run/secrets/kubernetes.io/serviceaccount"
KUBE_TIMEOUT: Final = 2.0
_MAX_RESPONSE: Final = 1 << 20
_MAX_UID: Final = 128


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib would resend the Authorization header to wherever a redirect points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch_https(url: str, token: str, ca_file: Path, timeout: float) -> bytes:
    """GET ``url`` with a bearer token, trusting only ``ca_file``: no redirects, no proxy."""
    if not url.startswith("https://"):
        raise ValueError("the Kubernetes API is only asked over https")
    context = ssl.create_default_context(cafile=str(ca_file))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        urllib.request.HTTPSHandler(context=context),
        _NoRedirect(),
    )
    request = urllib.request.Request(  # noqa: S310 - https only, checked above
        url, headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    with opener.open(request, timeout=timeout) as response:
        body: bytes = response.read(_MAX_RESPONSE + 1)
    if len(body) > _MAX_RESPONSE:
        raise ValueError("response too large")
    return body


def parse_namespace_uid(body: bytes) -> str | None:
    """``metadata.uid`` of a Namespace object, or None if the body is not one."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict) or obj.get("kind", "Namespace") != "Namespace":
        return None
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("name", "kube-system") != "kube-system":
        return None
    uid = metadata.get("uid")
    if not isinstance(uid, str):
        return None
    uid = uid.strip().lower()
    if not uid or len(uid) > _MAX_UID or not uid.isprintable() or "\0" in uid:
        return None
    return uid


def api_url(env: Mapping[str, str]) -> str | None:
    host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = env.get("KUBERNETES_SERVICE_PORT", "443").strip() or "443"
    if not host or not port.isdigit() or any(c in host for c in "/?#@ "):
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"https://{host}:{port}/api/v1/namespaces/kube-system"


def cluster_uid(
    root: Path,
    env: Mapping[str, str],
    fetch: KubeFetch = fetch_https,
    timeout: float = KUBE_TIMEOUT,
) -> str | None:
    """The cluster's kube-system uid, or None when not in a pod or the API does not answer."""
    url = api_url(env)
    account = root / SERVICE_ACCOUNT_DIR
    token = read_text(account / "token", limit=64 * 1024)
    ca_file = account / "ca.crt"
    if url is None or token is None or not token.strip() or not ca_file.is_file():
        return None
    try:
        body = fetch(url, token.strip(), ca_file, timeout)
    except (OSError, ValueError, ssl.SSLError):
        # Unreachable API, 403 from RBAC, TLS failure, timeout: the component is absent.
        return None
    return parse_namespace_uid(body)
