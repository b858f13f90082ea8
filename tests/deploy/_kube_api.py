"""A small Kubernetes API server on 127.0.0.1 for the kubernetes backend's tests.

It answers the endpoints the backend uses the way the real API server does
(paths, verbs, status codes, ``Status`` bodies for errors, ``items`` lists,
label selectors, ``dryRun=All``), keeps the objects it is given, and
records every request so tests assert the calls themselves: method, path,
query, content type and body. It does not run pods: a Deployment's status
and its pods are computed from :attr:`FakeKubeApi.rollout`, which a test
sets to walk a rollout through its states.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "test-token-1234"

#: URL collection segment -> (group/version prefix, kind)
_KINDS = {
    "secrets": ("/api/v1", "Secret"),
    "configmaps": ("/api/v1", "ConfigMap"),
    "services": ("/api/v1", "Service"),
    "pods": ("/api/v1", "Pod"),
    "deployments": ("/apis/apps/v1", "Deployment"),
}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


@dataclass
class FakeKubeApi:
    """State and behaviour; :func:`serve` puts it behind HTTP."""

    #: ``ready``: every replica ready at once; ``progressing``: none ready yet;
    #: ``crashloop``: pods restarting; ``image``: ImagePullBackOff;
    #: ``deadline``: ProgressDeadlineExceeded.
    rollout: str = "ready"
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    forbid: set[str] = field(default_factory=set)
    logs: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self, method: str | None = None, contains: str = "") -> list[Request]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and contains in r.path
        ]

    # --- derived state ----------------------------------------------------------------

    def deployment_view(self, obj: dict[str, Any]) -> dict[str, Any]:
        view = copy.deepcopy(obj)
        replicas = int(view["spec"].get("replicas", 1))
        generation = view["metadata"]["generation"]
        status: dict[str, Any] = {"observedGeneration": generation, "replicas": replicas}
        conditions = [{"type": "Available", "status": "True"}]
        if self.rollout == "ready":
            status |= {"readyReplicas": replicas, "updatedReplicas": replicas}
        elif self.rollout in ("progressing", "crashloop", "image"):
            status |= {"updatedReplicas": replicas}
        elif self.rollout == "deadline":
            conditions.append(
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": f'ReplicaSet "{view["metadata"]["name"]}-abc" has timed out '
                    "progressing.",
                }
            )
        status["conditions"] = conditions
        view["status"] = status
        return view

    def pods_of(self, namespace: str, name: str) -> list[dict[str, Any]]:
        obj = self.objects.get(("deployments", namespace, name))
        if obj is None:
            return []
        labels = obj["spec"]["template"]["metadata"]["labels"]
        image = obj["spec"]["template"]["spec"]["containers"][0]["image"]
        pods = []
        for index in range(int(obj["spec"].get("replicas", 1))):
            container: dict[str, Any] = {
                "name": "model",
                "ready": self.rollout == "ready",
                "restartCount": 0,
                "state": {"running": {}},
            }
            if self.rollout == "crashloop":
                container |= {
                    "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {
                        "terminated": {"exitCode": 13, "message": "error: not licensed (expired)"}
                    },
                }
            elif self.rollout == "image":
                container["state"] = {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{image}"',
                    }
                }
            elif self.rollout == "progressing":
                container["state"] = {"waiting": {"reason": "ContainerCreating"}}
            pods.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{name}-7d9f-{index}",
                        "namespace": namespace,
                        "labels": labels,
                    },
                    "status": {"containerStatuses": [container]},
                }
            )
        return pods


def _match(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


CLUSTER_SERVICES = ["api", "v1", "services"]
CLUSTER_DEPLOYMENTS = ["apis", "apps", "v1", "deployments"]


class _Handler(BaseHTTPRequestHandler):
    api: FakeKubeApi

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type", "")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode()
        api = self.api
        with api.lock:
            api.requests.append(Request(self.command, url.path, query, content_type, body))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        parts = [p for p in url.path.split("/") if p]
        with api.lock:
            code, answer, kind = self._route(parts, query, content_type, body)
        self._send(code, answer, kind)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle  # noqa: N815

    def _route(
        self, parts: list[str], query: dict[str, str], content_type: str, body: Any
    ) -> tuple[int, Any, str]:
        api = self.api
        method = self.command
        js = "application/json"
        # cluster-wide lists: /api/v1/services, /apis/apps/v1/deployments
        if method == "GET" and parts in (
            ["api", "v1", "services"],
            ["apis", "apps", "v1", "deployments"],
        ):
            plural = parts[-1]
            if plural in api.forbid:
                return 403, _status(403, "Forbidden", f"{plural} is forbidden: cannot list"), js
            selector = query.get("labelSelector", "")
            items = [
                api.deployment_view(o) if plural == "deployments" else o
                for (p, _, _), o in sorted(api.objects.items())
                if p == plural and _match(o["metadata"].get("labels", {}), selector)
            ]
            return 200, {"kind": "List", "items": items}, js
        # namespaces
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            if method == "POST" and len(parts) == 3:
                name = body["metadata"]["name"]
                if name in api.namespaces:
                    return (
                        409,
                        _status(409, "AlreadyExists", f'namespaces "{name}" already exists'),
                        js,
                    )
                if query.get("dryRun") != "All":
                    api.namespaces[name] = body
                return 201, body, js
            if method == "GET" and len(parts) == 4:
                name = parts[3]
                if name not in api.namespaces:
                    return 404, _status(404, "NotFound", f'namespaces "{name}" not found'), js
                return 200, api.namespaces[name], js
        # namespaced objects: {prefix}/namespaces/{ns}/{plural}[/{name}[/log]]
        prefix_len = 3 if parts[:2] == ["api", "v1"] else 4
        rest = parts[prefix_len:]
        if len(rest) < 2:
            return 404, _status(404, "NotFound", "no such path"), js
        namespace, plural = rest[0], rest[1]
        name = rest[2] if len(rest) > 2 else None
        if plural not in _KINDS:
            return 404, _status(404, "NotFound", "unknown resource"), js
        if plural in api.forbid:
            return 403, _status(403, "Forbidden", f"{plural} is forbidden"), js
        key = (plural, namespace, name or "")
        if plural == "pods":
            if name is None and method == "GET":
                items = [
                    p
                    for (dp, ns, dn) in list(api.objects)
                    if dp == "deployments" and ns == namespace
                    for p in api.pods_of(ns, dn)
                    if _match(p["metadata"]["labels"], query.get("labelSelector", ""))
                ]
                return 200, {"kind": "PodList", "items": items}, js
            if name is not None and rest[3:] == ["log"]:
                text = api.logs.get(name)
                if text is None:
                    return (
                        400,
                        _status(
                            400,
                            "BadRequest",
                            f'container "model" in pod "{name}" is waiting to start',
                        ),
                        js,
                    )
                lines = text.splitlines()
                tail = int(query.get("tailLines", len(lines)))
                return 200, "".join(line + "\n" for line in lines[-tail:] if tail), "text/plain"
            return 404, _status(404, "NotFound", "pods"), js
        if name is None:
            return 405, _status(405, "MethodNotAllowed", "only named objects here"), js
        if method == "PATCH":
            if content_type != "application/apply-patch+yaml":
                return 415, _status(415, "UnsupportedMediaType", content_type), js
            if not query.get("fieldManager"):
                return 422, _status(422, "Invalid", "fieldManager is required for apply patch"), js
            if namespace not in api.namespaces:
                return 404, _status(404, "NotFound", f'namespaces "{namespace}" not found'), js
            if body.get("metadata", {}).get("name") != name:
                return 400, _status(400, "BadRequest", "the name of the object does not match"), js
            old = api.objects.get(key)
            new = copy.deepcopy(body)
            meta = new["metadata"]
            meta["uid"] = old["metadata"]["uid"] if old else str(uuid.uuid4())
            changed = old is None or {k: v for k, v in old.items() if k != "metadata"} != {
                k: v for k, v in new.items() if k != "metadata"
            }
            meta["generation"] = (old["metadata"]["generation"] if old else 0) + (
                1 if changed else 0
            )
            meta["managedFields"] = [{"manager": query["fieldManager"], "operation": "Apply"}]
            if query.get("dryRun") != "All":
                api.objects[key] = new
            view = api.deployment_view(new) if plural == "deployments" else new
            return (200 if old else 201), view, js
        obj = api.objects.get(key)
        if obj is None:
            return 404, _status(404, "NotFound", f'{plural} "{name}" not found'), js
        if method == "GET":
            return 200, (api.deployment_view(obj) if plural == "deployments" else obj), js
        if method == "DELETE":
            if query.get("dryRun") != "All":
                del api.objects[key]
            return 200, _status(200, "", "deleted") | {"status": "Success"}, js
        return 405, _status(405, "MethodNotAllowed", method), js


class KubeApiServer:
    """The fake API server running in a thread; a kubeconfig pointing at it."""

    def __init__(self, api: FakeKubeApi | None = None) -> None:
        self.api = api or FakeKubeApi()
        handler = type("Handler", (_Handler,), {"api": self.api})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def kubeconfig(self, path: Path, *, token: str = TOKEN) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "deployer", "user": {"token": token}}],
                    "contexts": [
                        {"name": "fake", "context": {"cluster": "fake", "user": "deployer"}}
                    ],
                    "current-context": "fake",
                }
            )
        )
        return path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
