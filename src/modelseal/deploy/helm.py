"""A Helm chart for one deployment: fixed templates, the spec's values in ``values.yaml``.

The templates are the same for every deployment (they are constants below);
everything that varies lives in ``values.yaml`` (the spec's values and the
NodePorts), so a user can override any of it at install time
(``helm install demo ./chart --set replicas=3``), and ``values.schema.json``
makes Helm itself refuse values our spec parser would refuse (a NodePort
outside the range, a missing image, a negative replica count).

The license and the keys are files in the chart (``files/``), not values:
``helm get values`` and CI logs show values freely. ``--set-file
license=license.jwt`` replaces the license without rebuilding the chart.

Rendered with Helm's engine (the tests use ``helm-python-sdk``, Helm's Go
library, offline), the chart gives exactly the objects of
:func:`modelseal.deploy.manifests.render_manifests`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from modelseal._fs import os_error
from modelseal.deploy import _yaml
from modelseal.deploy.bundle import DeploymentBundle
from modelseal.deploy.manifests import ENVELOPE_KEY, LICENSE_KEY, render_service
from modelseal.deploy.nodeports import DEFAULT_RANGE, NodePortRange, check_node_ports
from modelseal.errors import OutputExistsError

_SEMVER: Final = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


_HELPERS: Final = """\
{{/* Labels on every object; the same set the modelseal renderer writes. */}}
{{- define "modelseal.labels" -}}
app.kubernetes.io/name: {{ .Values.model.name | toJson }}
app.kubernetes.io/instance: {{ .Values.name | toJson }}
app.kubernetes.io/version: {{ .Values.model.version | toJson }}
app.kubernetes.io/component: model-server
app.kubernetes.io/managed-by: modelseal
modelseal.io/model: {{ .Values.model.name | toJson }}
modelseal.io/model-version: {{ .Values.model.version | toJson }}
{{- range $key, $value := .Values.labels }}
{{ $key | toJson }}: {{ $value | toJson }}
{{- end }}
{{- end }}

{{/* The Deployment's selector is immutable: it names the deployment, never a version. */}}
{{- define "modelseal.selectorLabels" -}}
app.kubernetes.io/instance: {{ .Values.name | toJson }}
app.kubernetes.io/managed-by: modelseal
{{- end }}

{{- define "modelseal.metadata" -}}
namespace: {{ .Release.Namespace | toJson }}
labels:
  {{- include "modelseal.labels" . | nindent 2 }}
{{- with .Values.route }}
annotations:
  modelseal.io/route-prefix: {{ .prefix | toJson }}
{{- end }}
{{- end }}

{{/* The license: --set-file license=F wins over the chart's files/license.jwt. */}}
{{- define "modelseal.license" -}}
{{ .Values.license | default (.Files.Get "files/license.jwt") }}
{{- end }}

{{- define "modelseal.envelopeKey" -}}
{{ .Values.envelopeKey | default (.Files.Get "files/envelope-key.pub") }}
{{- end }}

{{- define "modelseal.trust" -}}
{{- if .Values.trustKey -}}
{{ .Values.trust | default (.Files.Get (printf "files/%s" .Values.trustKey)) }}
{{- end -}}
{{- end }}

{{- define "modelseal.trustKey" -}}
{{- if include "modelseal.trust" . }}{{ .Values.trustKey }}{{ end -}}
{{- end }}

{{/* Rolls the pods when the license or a key changes (same formula as the renderer). */}}
{{- define "modelseal.inputsDigest" -}}
{{- $parts := list (include "modelseal.license" .) (include "modelseal.envelopeKey" .) -}}
{{- $parts = append $parts (include "modelseal.trustKey" .) -}}
{{- $parts = append $parts (include "modelseal.trust" .) -}}
{{- $digests := list -}}
{{- range $parts }}{{ $digests = append $digests (sha256sum .) }}{{ end -}}
{{ join "\\n" $digests | sha256sum }}
{{- end }}
"""

_LICENSE_TEMPLATE: Final = """\
{{- $license := include "modelseal.license" . -}}
{{- if not $license -}}
{{- fail "a license is required: keep files/license.jwt or pass --set-file license=license.jwt" -}}
{{- end -}}
apiVersion: v1
kind: Secret
metadata:
  name: {{ printf "%s-license" .Values.name | toJson }}
  {{- include "modelseal.metadata" . | nindent 2 }}
type: Opaque
data:
  license.jwt: {{ $license | b64enc | toJson }}
"""

_CONFIG_MAP: Final = """\
{{- $envelope := include "modelseal.envelopeKey" . -}}
{{- $trust := include "modelseal.trust" . -}}
{{- if or $envelope $trust -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ printf "%s-keys" .Values.name | toJson }}
  {{- include "modelseal.metadata" . | nindent 2 }}
data:
  {{- if $envelope }}
  envelope-key.pub: {{ $envelope | toJson }}
  {{- end }}
  {{- if $trust }}
  {{ .Values.trustKey | toJson }}: {{ $trust | toJson }}
  {{- end }}
{{- end }}
"""

_SERVICE: Final = """\
{{- if ne (len .Values.nodePorts) (add1 (len .Values.extraPorts)) -}}
{{- fail "nodePorts needs one port for containerPort and one per extraPorts entry" -}}
{{- end -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ .Values.name | toJson }}
  {{- include "modelseal.metadata" . | nindent 2 }}
spec:
  type: NodePort
  selector:
    {{- include "modelseal.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      protocol: TCP
      port: {{ .Values.containerPort }}
      targetPort: http
      nodePort: {{ index .Values.nodePorts 0 }}
    {{- range $i, $port := .Values.extraPorts }}
    - name: {{ $port.name | toJson }}
      protocol: {{ $port.protocol | toJson }}
      port: {{ $port.containerPort }}
      targetPort: {{ $port.name | toJson }}
      nodePort: {{ index $.Values.nodePorts (add1 $i) }}
    {{- end }}
"""

_DEPLOYMENT: Final = """\
{{- $envelope := include "modelseal.envelopeKey" . -}}
{{- $trustKey := include "modelseal.trustKey" . -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Values.name | toJson }}
  {{- include "modelseal.metadata" . | nindent 2 }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels:
      {{- include "modelseal.selectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "modelseal.labels" . | nindent 8 }}
      annotations:
        {{- with .Values.route }}
        modelseal.io/route-prefix: {{ .prefix | toJson }}
        {{- end }}
        modelseal.io/inputs-sha256: {{ include "modelseal.inputsDigest" . | toJson }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: model
          image: {{ required "image is required" .Values.image | toJson }}
          imagePullPolicy: {{ .Values.imagePullPolicy | toJson }}
          {{- with .Values.command }}
          command: {{ toJson . }}
          {{- end }}
          {{- with .Values.args }}
          args: {{ toJson . }}
          {{- end }}
          env:
            - name: MODELSEAL_LICENSE
              value: "/etc/modelseal/license/license.jwt"
            {{- if $envelope }}
            - name: MODELSEAL_ENVELOPE_KEY
              value: "/etc/modelseal/keys/envelope-key.pub"
            {{- end }}
            {{- if $trustKey }}
            - name: MODELSEAL_TRUST
              value: {{ printf "/etc/modelseal/keys/%s" $trustKey | toJson }}
            {{- end }}
            {{- range $key, $value := .Values.env }}
            - name: {{ $key | toJson }}
              value: {{ $value | toJson }}
            {{- end }}
          ports:
            - name: http
              containerPort: {{ .Values.containerPort }}
              protocol: TCP
            {{- range .Values.extraPorts }}
            - name: {{ .name | toJson }}
              containerPort: {{ .containerPort }}
              protocol: {{ .protocol | toJson }}
            {{- end }}
          resources:
            {{- toYaml .Values.resources | nindent 12 }}
          volumeMounts:
            - name: modelseal-license
              mountPath: /etc/modelseal/license
              readOnly: true
            {{- if or $envelope $trustKey }}
            - name: modelseal-keys
              mountPath: /etc/modelseal/keys
              readOnly: true
            {{- end }}
            {{- range .Values.volumes }}
            - name: {{ .name | toJson }}
              mountPath: {{ .mountPath | toJson }}
              readOnly: {{ .readOnly }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /v2/health/live
              port: http
            periodSeconds: 5
            timeoutSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet:
              path: /v2/health/live
              port: http
            periodSeconds: 10
            timeoutSeconds: 2
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /v2/health/ready
              port: http
            periodSeconds: 5
            timeoutSeconds: 2
            failureThreshold: 3
          securityContext:
            allowPrivilegeEscalation: false
            capabilities:
              drop: ["ALL"]
      volumes:
        - name: modelseal-license
          secret:
            secretName: {{ printf "%s-license" .Values.name | toJson }}
            defaultMode: 292
        {{- if or $envelope $trustKey }}
        - name: modelseal-keys
          configMap:
            name: {{ printf "%s-keys" .Values.name | toJson }}
            defaultMode: 292
        {{- end }}
        {{- range .Values.volumes }}
        - name: {{ .name | toJson }}
          {{- if .hostPath }}
          hostPath:
            path: {{ .hostPath | toJson }}
          {{- else }}
          persistentVolumeClaim:
            claimName: {{ .persistentVolumeClaim | toJson }}
            readOnly: {{ .readOnly }}
          {{- end }}
        {{- end }}
"""

_NOTES: Final = """\
{{ .Values.name }} serves {{ .Values.model.name }} {{ .Values.model.version }} on NodePort(s) \
{{ join ", " .Values.nodePorts }} of every node.
Readiness: kubectl -n {{ .Release.Namespace }} rollout status deployment/{{ .Values.name }}
"""

TEMPLATES: Final = {
    "_helpers.tpl": _HELPERS,
    "secret.yaml": _LICENSE_TEMPLATE,
    "configmap.yaml": _CONFIG_MAP,
    "service.yaml": _SERVICE,
    "deployment.yaml": _DEPLOYMENT,
    "NOTES.txt": _NOTES,
}


def chart_values(bundle: DeploymentBundle, node_ports: Sequence[int]) -> dict[str, Any]:
    """``values.yaml``: the spec's values, in the spec's own spelling, plus the NodePorts."""
    deployment = bundle.deployment
    data = deployment.to_data()["spec"]
    values: dict[str, Any] = {
        "name": deployment.metadata.name,
        "labels": dict(deployment.metadata.labels),
        "model": data["model"],
        "image": data["image"],
        "imagePullPolicy": data["imagePullPolicy"],
        "containerPort": data["containerPort"],
        "extraPorts": data.get("extraPorts", []),
        "command": data.get("command") or [],
        "args": data.get("args") or [],
        "env": data.get("env", {}),
        "replicas": data["replicas"],
        "resources": data.get("resources", {}),
        "volumes": data.get("volumes", []),
        "nodePorts": list(node_ports),
        "route": data.get("route"),
        # Empty: the chart reads files/; --set-file replaces them at install time.
        "license": "",
        "envelopeKey": "",
        "trust": "",
        "trustKey": bundle.trust[0] if bundle.trust else "",
    }
    return values


def values_schema(port_range: NodePortRange) -> dict[str, Any]:
    """JSON Schema for ``values.yaml``: Helm refuses bad overrides before rendering."""
    string = {"type": "string"}
    label_value = {
        "type": "string",
        "maxLength": 63,
        "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$",
        "minLength": 1,
    }
    quantity = {
        "type": ["string", "number"],
        "pattern": r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)"
        r"(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$",
    }
    resources = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"cpu": quantity, "memory": quantity, "ephemeral-storage": quantity},
    }
    port = {"type": "integer", "minimum": 1, "maximum": 65535}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "modelseal ModelDeployment chart values",
        "type": "object",
        "required": ["name", "model", "image", "containerPort", "replicas", "nodePorts"],
        "properties": {
            "name": {"type": "string", "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
            "labels": {"type": "object", "additionalProperties": label_value},
            "model": {
                "type": "object",
                "required": ["name", "version"],
                "additionalProperties": False,
                "properties": {"name": label_value, "version": label_value},
            },
            "image": {"type": "string", "minLength": 1, "pattern": r"^\S+$"},
            "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
            "containerPort": port,
            "extraPorts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "containerPort", "protocol"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                        "containerPort": port,
                        "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
                    },
                },
            },
            "command": {"type": "array", "items": string},
            "args": {"type": "array", "items": string},
            "env": {"type": "object", "additionalProperties": string},
            "replicas": {"type": "integer", "minimum": 0, "maximum": 1000},
            "resources": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"requests": resources, "limits": resources},
            },
            "volumes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "mountPath", "readOnly"],
                    "properties": {
                        "name": string,
                        "mountPath": {"type": "string", "pattern": "^/"},
                        "hostPath": {"type": "string", "pattern": "^/"},
                        "persistentVolumeClaim": string,
                        "readOnly": {"type": "boolean"},
                    },
                },
            },
            "nodePorts": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {
                    "type": "integer",
                    "minimum": port_range.start,
                    "maximum": port_range.end,
                },
            },
            "route": {
                "type": ["object", "null"],
                "properties": {"prefix": {"type": "string", "pattern": "^/"}},
            },
            "license": string,
            "envelopeKey": string,
            "trust": string,
            "trustKey": {"enum": ["", "trust.pub", "trust.json"]},
        },
    }


def chart_files(
    bundle: DeploymentBundle,
    node_ports: Sequence[int],
    port_range: NodePortRange = DEFAULT_RANGE,
) -> dict[str, str]:
    """Every file of the chart, by path relative to the chart's folder."""
    ports = check_node_ports(node_ports, bundle.deployment.spec.node_port_count, (), port_range)
    render_service(bundle, ports)  # the same checks the plain renderer makes
    model = bundle.deployment.spec.model
    chart = {
        "apiVersion": "v2",
        "name": bundle.name,
        "description": f"modelseal deployment of {model.name} {model.version}",
        "type": "application",
        # A chart version must be SemVer 2; the model's version is when it can be.
        "version": model.version if _SEMVER.match(model.version) else "0.1.0",
        "appVersion": model.version,
        "annotations": {"modelseal.io/spec-api-version": "modelseal/v1"},
    }
    header = (
        "# Generated by `modelseal deploy export --format helm` from a ModelDeployment spec.\n"
        "# Override at install time (helm install NAME . --set replicas=3); the license and\n"
        "# keys are in files/ (or --set-file license=license.jwt), not in these values.\n"
    )
    files = {
        "Chart.yaml": _yaml.dump(chart),
        "values.yaml": header + _yaml.dump(chart_values(bundle, ports)),
        "values.schema.json": json.dumps(values_schema(port_range), indent=2) + "\n",
        ".helmignore": ".git/\n*.swp\n*.bak\n",
        f"files/{LICENSE_KEY}": bundle.license,
    }
    if bundle.envelope_key is not None:
        files[f"files/{ENVELOPE_KEY}"] = bundle.envelope_key
    if bundle.trust is not None:
        files[f"files/{bundle.trust[0]}"] = bundle.trust[1]
    for name, text in TEMPLATES.items():
        files[f"templates/{name}"] = text
    return files


def write_helm_chart(
    bundle: DeploymentBundle,
    node_ports: Sequence[int],
    out_dir: str | Path,
    port_range: NodePortRange = DEFAULT_RANGE,
    *,
    force: bool = False,
) -> Path:
    """Write the chart as the folder ``out_dir``, all at once or not at all.

    The chart is built in a temporary folder beside ``out_dir`` and renamed
    into place, so a failure never leaves half a chart. An existing
    non-empty ``out_dir`` is refused (:class:`OutputExistsError`, exit 2);
    ``force`` replaces it only if it is a chart (holds ``Chart.yaml``):
    ``--out ~ --force`` must not delete a home folder.
    """
    files = chart_files(bundle, node_ports, port_range)
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise OutputExistsError(f"{root} exists and is not a folder")
    occupied = root.is_dir() and any(root.iterdir())
    if occupied and not force:
        raise OutputExistsError(f"{root} is not empty (use --force to replace a chart there)")
    if occupied and not (root / "Chart.yaml").is_file():
        raise OutputExistsError(f"{root} is not empty and not a Helm chart; refusing to replace it")
    parent = root.parent
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise os_error(root, exc) from None
    old: Path | None = None
    try:
        for rel, text in files.items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            # The license grants use of a model: its copy is its owner's alone.
            mode = 0o600 if rel.startswith("files/") else 0o644
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
        staging.chmod(0o755)
        if occupied:
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=parent))
            os.replace(root, old)
        os.replace(staging, root)  # an empty folder in the way is replaced atomically
    except OSError as exc:
        if old is not None and not root.exists():
            with contextlib.suppress(OSError):
                os.replace(old, root)
                old = None
        raise os_error(root, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return root


__all__ = [
    "TEMPLATES",
    "chart_files",
    "chart_values",
    "values_schema",
    "write_helm_chart",
]
