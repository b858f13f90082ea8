"""The deployment spec: ``apiVersion: modelseal/v1``, ``kind: ModelDeployment``.

A vendor or model manager writes one YAML file per deployment; everything
the platform renders (Kubernetes manifests, a Helm chart, later the local
backend's processes and the gateway route) is derived from it. The schema is
strict on purpose: an unknown field is refused rather than ignored (a typo
such as ``replica: 3`` must not silently deploy one replica), types are not
coerced (``replicas: "2"`` is refused), and every error names its field path
(``spec.replicas: must be an integer``) so a user can fix the file without
reading our code. Kubernetes' own schemas do not catch a missing image, a
NodePort out of range or ``memory: 1 GB``; this module does
(docs/deploy.md, "Spec reference").
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from modelseal.deploy import _yaml
from modelseal.deploy.errors import DeploySpecError

API_VERSION: Final = "modelseal/v1"
KIND: Final = "ModelDeployment"

#: A spec is a few hundred bytes; a megabyte is generous and bounds the parser.
MAX_SPEC_BYTES: Final = 1024 * 1024

#: Volume names and env names under these are ours (the license and key mounts).
RESERVED_PREFIX: Final = "modelseal-"
RESERVED_ENV_PREFIX: Final = "MODELSEAL_"
#: Where the rendered pod mounts the license and the keys; user volumes stay out.
RESERVED_MOUNT_ROOT: Final = "/etc/modelseal"
#: Label prefixes the renderer owns; a user label there would fight the selector.
RESERVED_LABEL_PREFIXES: Final = ("app.kubernetes.io/", "modelseal.io/")

# --- value grammars ----------------------------------------------------------------

# RFC 1035 label: a Service name must start with a letter, so the deployment
# name (which names the Service) must too; still a valid DNS-1123 label.
_DNS1035_LABEL: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_VALUE: Final = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# Kubernetes before 1.30 accepted only this for env names; we claim 1.25+.
_ENV_NAME: Final = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_PORT_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ROUTE_SEGMENT: Final = re.compile(r"^[A-Za-z0-9._~-]+$")

# The reference grammar of distribution/reference (what every registry and
# container runtime parses), without the rarely used IPv6 host form.
_DOMAIN_COMPONENT: Final = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN: Final = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT: Final = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_NAME: Final = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG: Final = r"[\w][\w.-]{0,127}"
_DIGEST: Final = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}"
_IMAGE: Final = re.compile(rf"^(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?$")
_MAX_IMAGE_NAME: Final = 255

# Kubernetes resource.Quantity, non-negative (requests and limits cannot be < 0).
_QUANTITY: Final = re.compile(
    r"^(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_BINARY: Final = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL: Final[dict[str, Decimal]] = {
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}


def quantity_value(text: str) -> Decimal:
    """The numeric value of a Kubernetes quantity (``500m`` is 0.5, ``1Gi`` 2**30)."""
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    number = Decimal(match["num"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    if suffix:
        exponent = int(suffix[1:])
        if abs(exponent) > 30:
            raise ValueError(f"{text!r}: exponent out of range")
        return number.scaleb(exponent)
    return number


# --- validators (they raise ValueError; the message becomes the field's error) ----


def _dns1035_label(value: str) -> str:
    if len(value) > 63 or not _DNS1035_LABEL.match(value):
        raise ValueError(
            "must be a DNS-1123 label that starts with a letter: lower-case letters, digits "
            "and '-', at most 63 characters (it names the Service)"
        )
    return value


def _dns1123_label(value: str) -> str:
    if len(value) > 63 or not _DNS1123_LABEL.match(value):
        raise ValueError(
            "must be a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return value


def _label_value(value: str) -> str:
    if not value or len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(
            "must be a valid label value: 1-63 characters of letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit"
        )
    return value


def _image(value: str) -> str:
    if not value.strip():
        raise ValueError("must name a container image")
    match = _IMAGE.match(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not a container image reference "
            "(e.g. registry.example.com/acme/demo:1.0.0)"
        )
    if len(match["name"]) > _MAX_IMAGE_NAME:
        raise ValueError(f"image name is longer than {_MAX_IMAGE_NAME} characters")
    return value


def _quantity(value: object) -> object:
    # YAML reads ``cpu: 2`` as an int and ``cpu: 0.5`` as a float; Kubernetes
    # takes both, so we do too, spelled as the string Kubernetes would store.
    if isinstance(value, bool):
        raise ValueError("must be a quantity such as 500m, 2 or 1Gi")
    if isinstance(value, int):
        value = str(value)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite quantity")
        value = format(Decimal(repr(value)).normalize(), "f")
    if not isinstance(value, str):
        raise ValueError("must be a quantity such as 500m, 2 or 1Gi")
    try:
        quantity_value(value)
    except (ValueError, InvalidOperation):
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 1Gi)"
        ) from None
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    if "\x00" in value or any(part in (".", "..") for part in value.split("/")):
        raise ValueError("must not contain '.' or '..' components or NUL")
    if len(value) > 4096:
        raise ValueError("is longer than 4096 characters")
    return value


def _text(value: str) -> str:
    # Control characters other than tab and newline, NEL, the Unicode line and
    # paragraph separators and lone surrogates are read as line breaks (or
    # refused) by some YAML and JSON parsers on the way to the pod: a value
    # would arrive changed. No legitimate argument or env value needs them.
    for char in value:
        code = ord(char)
        if (
            (code < 0x20 and char not in "\t\n")
            or 0x7F <= code <= 0x9F
            or code in (0x2028, 0x2029)
            or 0xD800 <= code <= 0xDFFF
        ):
            raise ValueError(f"must not contain the control character U+{code:04X}")
    return value


def _file_name(value: str) -> str:
    if not value:
        raise ValueError("must name a file")
    return _text(value)


def _route_prefix(value: str) -> str:
    segments = value.split("/")
    if (
        not value.startswith("/")
        or len(value) > 200
        or len(segments) < 2
        or not all(_ROUTE_SEGMENT.match(s) and s not in (".", "..") for s in segments[1:])
    ):
        raise ValueError(
            "must be a path prefix such as /demo or /acme/demo: '/'-separated segments of "
            "letters, digits, '.', '_', '~' and '-', no trailing '/', at most 200 characters"
        )
    return value


def _port_name(value: str) -> str:
    # IANA_SVC_NAME, what Kubernetes checks on the server (the schemas do not).
    if (
        len(value) > 15
        or not _PORT_NAME.match(value)
        or "--" in value
        or not any(c.isalpha() for c in value)
    ):
        raise ValueError(
            "must be a port name: 1-15 lower-case letters, digits and single '-', "
            "with at least one letter"
        )
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid environment variable name")
    if value.startswith(RESERVED_ENV_PREFIX):
        raise ValueError(
            f"{value!r}: names starting with {RESERVED_ENV_PREFIX} are set by modelseal"
        )
    return value


def _label_key(value: str) -> str:
    prefix, slash, name = value.rpartition("/")
    if (
        (slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)))
        or len(name) > 63
        or not _LABEL_NAME.match(name)
    ):
        raise ValueError(f"{value!r} is not a valid label key")
    if any(value.startswith(p) for p in RESERVED_LABEL_PREFIXES):
        raise ValueError(
            f"{value!r}: labels under {' and '.join(RESERVED_LABEL_PREFIXES)} are set by modelseal"
        )
    return value


Dns1035Label = Annotated[str, AfterValidator(_dns1035_label)]
Dns1123Label = Annotated[str, AfterValidator(_dns1123_label)]
LabelValue = Annotated[str, AfterValidator(_label_value)]
Quantity = Annotated[str, BeforeValidator(_quantity)]
AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]
FileName = Annotated[str, AfterValidator(_file_name)]
EnvName = Annotated[str, AfterValidator(_env_name)]
LabelKey = Annotated[str, AfterValidator(_label_key)]
Port = Annotated[int, Field(ge=1, le=65535)]
Text = Annotated[str, AfterValidator(_text)]


class _Strict(BaseModel):
    """No coercion, no unknown fields, camelCase in YAML, immutable once parsed."""

    model_config = ConfigDict(
        strict=True,
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=False,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class Metadata(_Strict):
    name: Dns1035Label
    namespace: Dns1123Label = "default"
    #: Extra labels put on every object (e.g. team or cost centre).
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict)


class ModelRef(_Strict):
    """Which model and version this deployment serves; both become labels."""

    name: LabelValue
    version: LabelValue


class Resources(_Strict):
    cpu: Quantity | None = None
    memory: Quantity | None = None
    ephemeral_storage: Quantity | None = Field(default=None, alias="ephemeral-storage")


class ResourceRequirements(_Strict):
    requests: Resources | None = None
    limits: Resources | None = None

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        if self.requests is None or self.limits is None:
            return self
        for field, info in Resources.model_fields.items():
            request = getattr(self.requests, field)
            limit = getattr(self.limits, field)
            if (
                request is not None
                and limit is not None
                and quantity_value(request) > quantity_value(limit)
            ):
                key = info.alias or field
                raise ValueError(
                    f"requests.{key} ({request}) must not exceed limits.{key} ({limit})"
                )
        return self


class Volume(_Strict):
    """A volume mounted into the model container: a host directory or a claim."""

    name: Dns1123Label
    mount_path: AbsolutePath
    host_path: AbsolutePath | None = None
    persistent_volume_claim: Dns1123Label | None = None
    #: Models are read, never written: read-only unless the spec says otherwise.
    read_only: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        if (self.host_path is None) == (self.persistent_volume_claim is None):
            raise ValueError("needs exactly one of hostPath or persistentVolumeClaim")
        if self.name.startswith(RESERVED_PREFIX):
            raise ValueError(f"volume names starting with {RESERVED_PREFIX!r} are reserved")
        mount = self.mount_path.rstrip("/") or "/"
        if (
            mount == "/"
            or mount == RESERVED_MOUNT_ROOT
            or mount.startswith(RESERVED_MOUNT_ROOT + "/")
            or RESERVED_MOUNT_ROOT.startswith(mount + "/")
        ):
            raise ValueError(
                f"mountPath {self.mount_path!r} would cover the root or {RESERVED_MOUNT_ROOT}, "
                "where modelseal mounts the license and keys"
            )
        return self


class ExtraPort(_Strict):
    """A further container port (the first, ``containerPort``, serves HTTP and probes)."""

    name: Annotated[str, AfterValidator(_port_name)]
    container_port: Port
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"


class FileRef(_Strict):
    """A file next to the spec (relative paths resolve against the spec's folder)."""

    file: FileName


class Route(_Strict):
    """The gateway route this deployment creates (the gateway integration reads it)."""

    prefix: Annotated[str, AfterValidator(_route_prefix)]


class DeploymentSpec(_Strict):
    model: ModelRef
    image: Annotated[str, AfterValidator(_image)]
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    container_port: Port = 8080
    extra_ports: list[ExtraPort] = Field(default_factory=list)
    command: list[Annotated[Text, Field(min_length=1)]] | None = None
    args: list[Text] | None = None
    env: dict[EnvName, Text] = Field(default_factory=dict)
    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    volumes: list[Volume] = Field(default_factory=list)
    #: How many NodePorts the Service needs: one per exposed port.
    node_ports: Annotated[int, Field(ge=1, le=16)] | None = None
    license: FileRef
    envelope_key: FileRef | None = None
    trust: FileRef | None = None
    route: Route | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentSpec:
        ports = [("containerPort", self.container_port)] + [
            (f"extraPorts[{i}]", p.container_port) for i, p in enumerate(self.extra_ports)
        ]
        seen_ports: set[int] = set()
        for where, port in ports:
            if port in seen_ports:
                raise ValueError(f"{where}: port {port} is exposed twice")
            seen_ports.add(port)
        names = ["http"] + [p.name for p in self.extra_ports]
        if len(set(names)) != len(names):
            raise ValueError("extraPorts: port names must be unique and not 'http'")
        if self.node_ports is not None and self.node_ports != len(ports):
            raise ValueError(
                f"nodePorts: is {self.node_ports} but the deployment exposes {len(ports)} "
                "port(s) (containerPort plus extraPorts); each gets one NodePort"
            )
        volume_names = [v.name for v in self.volumes]
        if len(set(volume_names)) != len(volume_names):
            raise ValueError("volumes: names must be unique")
        mounts = [v.mount_path.rstrip("/") for v in self.volumes]
        if len(set(mounts)) != len(mounts):
            raise ValueError("volumes: two volumes share a mountPath")
        return self

    @property
    def node_port_count(self) -> int:
        """One NodePort per exposed port (``nodePorts`` when given, checked to agree)."""
        return 1 + len(self.extra_ports)


class ModelDeployment(_Strict):
    """One deployment of one model version: the whole spec file."""

    api_version: Literal["modelseal/v1"]
    kind: Literal["ModelDeployment"]
    metadata: Metadata
    spec: DeploymentSpec

    def to_data(self) -> dict[str, Any]:
        """The spec as YAML-ready data: what parsing this model back would give again."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- parsing ------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)

_TYPE_MESSAGES: Final = {
    "int_type": "must be an integer",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "string_pattern_mismatch": "must match {pattern}",
    "too_short": "must not be empty",
}


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = str(part)
    return text


def _message(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'one of the allowed values')}"
    if kind in _TYPE_MESSAGES:
        text = _TYPE_MESSAGES[kind].format(**ctx)
        if kind == "string_type" and isinstance(error.get("input"), bool | int | float):
            text += " (quote it in YAML: numbers, yes/no and on/off are not strings)"
        return text
    return str(error["msg"])


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        # A dict key's own validator reports at the key itself, tagged "[key]".
        loc = tuple(p for p in loc if p != "[key]")
        problems.append((_path(loc), _message(error)))
    return problems


def spec_from_data(data: object, *, source: str | None = None) -> ModelDeployment:
    """Validate already-parsed data (a dict from YAML or JSON) as a spec."""
    if not isinstance(data, dict):
        raise DeploySpecError([("", "a deployment spec is a YAML mapping")], source=source)
    if data.get("apiVersion") != API_VERSION and isinstance(data.get("apiVersion"), str):
        raise DeploySpecError(
            [
                (
                    "apiVersion",
                    f"{data['apiVersion']!r} is not supported; this release reads {API_VERSION}",
                )
            ],
            source=source,
        )
    try:
        return ModelDeployment.model_validate(data)
    except ValidationError as exc:
        raise DeploySpecError(_problems(exc), source=source) from None
    except RecursionError:
        raise DeploySpecError([("", "the spec is nested too deeply")], source=source) from None


def parse_spec(text: str | bytes, *, source: str | None = None) -> ModelDeployment:
    """Parse a spec from YAML text: exactly one document, no duplicate keys."""
    if len(text) > MAX_SPEC_BYTES:
        raise DeploySpecError([("", f"larger than {MAX_SPEC_BYTES} bytes")], source=source)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise DeploySpecError([("", "not UTF-8 text")], source=source) from None
    try:
        documents = [d for d in yaml.load_all(text, Loader=_UniqueKeyLoader) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise DeploySpecError(
            [("", f"not valid YAML: {where}{exc.problem or exc.context}")], source=source
        ) from None
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as exc:
        raise DeploySpecError([("", f"not valid YAML: {exc}")], source=source) from None
    if len(documents) != 1:
        raise DeploySpecError(
            [("", f"expected one YAML document, found {len(documents)}")], source=source
        )
    return spec_from_data(documents[0], source=source)


def load_spec(path: str | Path) -> ModelDeployment:
    """Read and validate a spec file; any problem is a :class:`DeploySpecError`."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise DeploySpecError([("", "no such file")], source=str(path)) from None
    except IsADirectoryError:
        raise DeploySpecError([("", "is a directory, not a spec file")], source=str(path)) from None
    except OSError as exc:
        raise DeploySpecError([("", exc.strerror or str(exc))], source=str(path)) from None
    return parse_spec(data, source=str(path))


def dump_spec(deployment: ModelDeployment) -> str:
    """The spec as YAML text that :func:`parse_spec` reads back to an equal spec."""
    return _yaml.dump(deployment.to_data())


__all__ = [
    "API_VERSION",
    "KIND",
    "DeploymentSpec",
    "ExtraPort",
    "FileRef",
    "Metadata",
    "ModelDeployment",
    "ModelRef",
    "ResourceRequirements",
    "Resources",
    "Route",
    "Volume",
    "dump_spec",
    "load_spec",
    "parse_spec",
    "quantity_value",
    "spec_from_data",
]
