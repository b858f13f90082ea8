"""The routes file (version 1): routes, API keys as hashes, rate limits. Validated
with messages that name the field (``routes[1].prefix: ...``).

Routes follow the patent's route record (id, name, access prefix, forward
URL). Keys are stored only as SHA-256 digests: keys are 256-bit random
tokens, so a plain hash is not guessable and costs ~1 us per request where
a password hash would cost milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from modelseal.errors import FormatError, ModelsealError

VERSION: Final = 1
KEY_PREFIX: Final = "msk_"
#: The gateway's own endpoints, answered before any route.
RESERVED_PATHS: Final = ("/metrics", "/healthz")
_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
_HEX64_RE: Final = re.compile(r"[0-9a-f]{64}")
#: A DNS name or an IPv4/IPv6 literal (urlsplit strips an IPv6 literal's brackets).
_HOST_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,253}|[0-9A-Fa-f:.]{2,45}")
#: A routes file larger than this is a mistake (a log, /dev/zero), not routes.
MAX_FILE: Final = 16 * 1024 * 1024
_RATE_RE: Final = re.compile(r"\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*")
_PERIODS: Final = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_PERIODS_H: Final = {"h": 3600, "hour": 3600}


class RoutesFileError(FormatError):
    """The routes file is not valid; the message names the field."""


class GatewayConfigError(ModelsealError):
    """The gateway's options do not fit together (a decrypting route without a key,
    an unreachable Redis at start)."""

    exit_code = 2


@dataclass(frozen=True)
class Rate:
    """``count`` requests per ``period_s`` seconds, bursts of up to ``count`` allowed."""

    count: int
    period_s: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        m = _RATE_RE.fullmatch(text)
        if m is None:
            raise ValueError("must look like 50/s, 600/min or 1000/h")
        count = int(m.group(1))
        if count < 1:
            raise ValueError("must allow at least 1 request")
        if count > 1_000_000_000:
            raise ValueError("must allow at most 1000000000 requests per period")
        unit = m.group(2)
        return cls(count, _PERIODS.get(unit) or _PERIODS_H[unit])

    def __str__(self) -> str:
        unit = {1: "s", 60: "min", 3600: "h"}[self.period_s]
        return f"{self.count}/{unit}"


@dataclass(frozen=True)
class Route:
    id: str
    name: str
    prefix: str
    forward_url: str
    strip_prefix: bool = True
    decrypt: bool = True
    timeout_s: float = 30.0

    def matches(self, path: str) -> bool:
        """``/demo`` matches ``/demo`` and ``/demo/...``, never ``/demox``."""
        return self.prefix == "/" or path == self.prefix or path.startswith(self.prefix + "/")

    def upstream_path(self, path: str) -> str:
        base = urlsplit(self.forward_url).path.rstrip("/")
        rest = path[len(self.prefix) :] if self.strip_prefix and self.prefix != "/" else path
        if not rest.startswith("/"):
            rest = "/" + rest
        return base + rest


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    routes: frozenset[str]
    rate_limit: Rate | None = None

    def allows(self, route_id: str) -> bool:
        return "*" in self.routes or route_id in self.routes


@dataclass(frozen=True)
class GatewayConfig:
    routes: tuple[Route, ...]
    keys_by_hash: Mapping[str, ApiKey]

    def __post_init__(self) -> None:
        # longest prefix first, so the first match is the longest
        object.__setattr__(self, "routes", tuple(sorted(self.routes, key=lambda r: -len(r.prefix))))

    def match(self, path: str) -> Route | None:
        for route in self.routes:
            if route.matches(path):
                return route
        return None

    def key_for(self, presented: str) -> ApiKey | None:
        return self.keys_by_hash.get(hash_key(presented))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def check_key_name(name: str) -> None:
    """Key names appear in access logs and Redis keys: a short, plain token."""
    if not _NAME_RE.fullmatch(name):
        raise RoutesFileError(f"key name must match {_NAME_RE.pattern}")


def new_api_key() -> tuple[str, str]:
    """A fresh key (shown once) and the hash the routes file stores."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key)


# --- validation ----------------------------------------------------------------------


class _Fields:
    """Read one mapping, naming each field in errors as ``where.field``."""

    def __init__(self, data: Any, where: str, allowed: set[str]) -> None:
        if not isinstance(data, dict):
            raise RoutesFileError(f"{where}: must be a mapping")
        unknown = sorted(set(map(str, data)) - allowed)
        if unknown:
            raise RoutesFileError(f"{where}.{unknown[0]}: unknown field")
        self.data = data
        self.where = where

    def err(self, field: str, message: str) -> RoutesFileError:
        return RoutesFileError(f"{self.where}.{field}: {message}")

    def text(self, field: str, pattern: re.Pattern[str] | None = None, default: Any = ...) -> Any:
        if field not in self.data:
            if default is ...:
                raise self.err(field, "required")
            return default
        value = self.data[field]
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            want = f"must match {pattern.pattern}" if pattern is not None else "must be a string"
            raise self.err(field, want)
        return value

    def flag(self, field: str, default: bool) -> bool:
        value = self.data.get(field, default)
        if not isinstance(value, bool):
            raise self.err(field, "must be true or false")
        return value

    def number(self, field: str, default: float, lo: float, hi: float) -> float:
        value = self.data.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise self.err(field, f"must be a number from {lo:g} to {hi:g}")
        return float(value)


def _route(data: Any, where: str) -> Route:
    f = _Fields(
        data,
        where,
        {"id", "name", "prefix", "forward_url", "strip_prefix", "decrypt", "timeout_s"},
    )
    rid = f.text("id", _ID_RE)
    prefix = f.text("prefix")
    if not prefix.startswith("/") or (prefix != "/" and prefix.endswith("/")) or "//" in prefix:
        raise f.err("prefix", "must start with / and not end with / (e.g. /demo)")
    if (any(c in prefix for c in "?#%\\") or not prefix.isprintable() or " " in prefix) or any(
        p in (".", "..") for p in prefix.split("/")
    ):
        raise f.err("prefix", "must be a plain path (no ?, #, %, \\, spaces, controls, . or ..)")
    if prefix in RESERVED_PATHS:
        raise f.err("prefix", f"{prefix} is the gateway's own endpoint")
    url = f.text("forward_url")
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: a bad file, not a bug
        raise f.err("forward_url", "is not a valid URL") from None
    if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
        raise f.err("forward_url", "must be http://host:port[/path] (no query or fragment)")
    if "@" in parts.netloc:
        # credentials in a URL end up in logs and error messages; a model
        # service behind the gateway is reached on a private network
        raise f.err("forward_url", "must not hold a user or password (user@host)")
    if not _HOST_RE.fullmatch(parts.hostname) or not url.isprintable() or " " in url:
        raise f.err("forward_url", "has an invalid host name")
    try:
        port = parts.port
    except ValueError:
        raise f.err("forward_url", "has an invalid port") from None
    if port == 0:
        raise f.err("forward_url", "has an invalid port")
    return Route(
        id=rid,
        name=f.text("name", default=rid),
        prefix=prefix,
        forward_url=url.rstrip("/"),
        strip_prefix=f.flag("strip_prefix", True),
        decrypt=f.flag("decrypt", True),
        timeout_s=f.number("timeout_s", 30.0, 0.001, 3600.0),
    )


def _key(data: Any, where: str, route_ids: set[str]) -> ApiKey:
    f = _Fields(data, where, {"name", "sha256", "routes", "rate_limit"})
    name = f.text("name", _NAME_RE)
    digest = f.text("sha256", _HEX64_RE)
    routes = f.data.get("routes")
    if not isinstance(routes, list) or not routes or not all(isinstance(r, str) for r in routes):
        raise f.err("routes", 'must be a non-empty list of route ids (or ["*"])')
    for i, r in enumerate(routes):
        if r != "*" and r not in route_ids:
            raise f.err(f"routes[{i}]", f"no route with id {r!r}")
    rate = None
    if f.data.get("rate_limit") is not None:
        text = f.data["rate_limit"]
        if not isinstance(text, str):
            raise f.err("rate_limit", "must look like 50/s, 600/min or 1000/h")
        try:
            rate = Rate.parse(text)
        except ValueError as exc:
            raise f.err("rate_limit", str(exc)) from None
    return ApiKey(name, digest, frozenset(routes), rate)


def parse_config(data: Any) -> GatewayConfig:
    top = _Fields(data, "routes file", {"version", "routes", "api_keys"})
    if "version" not in data:
        raise RoutesFileError("version: required (this gateway reads version 1)")
    if type(data["version"]) is not int or data["version"] != VERSION:  # not true, not 1.0
        raise RoutesFileError(f"version: {data['version']!r} is not supported (this reads 1)")
    raw_routes = top.data.get("routes")
    if not isinstance(raw_routes, list):
        raise RoutesFileError("routes: must be a list")
    routes: list[Route] = []
    for i, item in enumerate(raw_routes):
        route = _route(item, f"routes[{i}]")
        for j, other in enumerate(routes):
            if other.id == route.id:
                raise RoutesFileError(f"routes[{i}].id: {route.id!r} is also routes[{j}].id")
            if other.prefix == route.prefix:
                raise RoutesFileError(
                    f"routes[{i}].prefix: {route.prefix!r} is also routes[{j}].prefix"
                )
        routes.append(route)
    raw_keys = top.data.get("api_keys", [])
    if not isinstance(raw_keys, list):
        raise RoutesFileError("api_keys: must be a list")
    ids = {r.id for r in routes}
    keys: dict[str, ApiKey] = {}
    names: dict[str, int] = {}
    for i, item in enumerate(raw_keys):
        key = _key(item, f"api_keys[{i}]", ids)
        if key.name in names:
            raise RoutesFileError(
                f"api_keys[{i}].name: {key.name!r} is also api_keys[{names[key.name]}].name"
            )
        if key.sha256 in keys:
            raise RoutesFileError(f"api_keys[{i}].sha256: the same key is listed twice")
        names[key.name] = i
        keys[key.sha256] = key
    return GatewayConfig(tuple(routes), keys)


def _read(path: Path) -> str:
    """The file's text: a regular file (a FIFO or a device would block or never end),
    at most MAX_FILE bytes, UTF-8."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RoutesFileError(f"routes file {path} is not a regular file")
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_FILE:
                chunk = os.read(fd, MAX_FILE + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            raw = b"".join(chunks)
        finally:
            os.close(fd)
    except OSError as exc:
        raise RoutesFileError(f"cannot read routes file {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE:
        raise RoutesFileError(f"routes file {path} is over {MAX_FILE} bytes")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RoutesFileError(f"routes file {path} is not UTF-8") from None


def load_config(path: str | Path) -> GatewayConfig:
    """Read, parse and validate a routes file; every problem is a RoutesFileError."""
    path = Path(path)
    text = _read(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RoutesFileError(f"routes file {path} is not valid YAML{where}") from None
    except RecursionError:
        raise RoutesFileError(f"routes file {path} is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of over 4300 digits
        raise RoutesFileError(f"routes file {path} is not valid YAML: {exc}") from None
    try:
        return parse_config(data)
    except RecursionError:  # a structure deep enough to exhaust the stack
        raise RoutesFileError(f"routes file {path} is nested too deeply") from None
