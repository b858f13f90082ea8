"""A small JSON-over-HTTP client on the standard library, for the device side and the CLI.

The device side (``device activate``, the Guard's heartbeat thread) must
not need the server extra, and none of these calls is on a hot path, so
``urllib`` is enough. Redirects are not followed: a redirect could send a
license key or a heartbeat somewhere the operator did not configure.
Errors come back as :class:`ServerError` subclasses with the server's
message and a CLI exit code (docs/cli.md).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from modelseal.errors import ModelsealError

MAX_RESPONSE_BYTES = 16 << 20


class ServerError(ModelsealError):
    """The server refused the request or could not be reached."""

    exit_code = 21

    def __init__(self, message: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ServerUnreachableError(ServerError):
    exit_code = 21


class ServerAuthError(ServerError):
    exit_code = 22


class ServerNotFoundError(ServerError):
    exit_code = 23


class ServerConflictError(ServerError):
    exit_code = 24


class ActivationRefusedError(ServerError):
    exit_code = 25


class ServerBackendError(ServerError):
    """The control plane's deployment backend failed (no cluster, an image missing)."""

    exit_code = 30


class ServerRejectedError(ServerError):
    """The server found the request invalid (4xx other than the above)."""

    exit_code = 2


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


#: refusals about who is asking (exit 22), as opposed to activation refusals (403, exit 25)
_AUTH_CODES = (
    "unauthorized",
    "forbidden",
    "csrf",
    "mfa_required",
    "totp_invalid",
    "totp_required",
    "too_many_attempts",
)


def _error_for(status: int, code: str, message: str) -> ServerError:
    cls: type[ServerError]
    if status == 429 or (status in (401, 403) and code in _AUTH_CODES):
        cls = ServerAuthError
    elif status == 403:
        cls = ActivationRefusedError
    elif status == 404:
        cls = ServerNotFoundError
    elif status == 409:
        cls = ServerConflictError
    elif code.startswith("backend_"):
        cls = ServerBackendError
    elif 400 <= status < 500:
        cls = ServerRejectedError
    else:
        cls = ServerUnreachableError
    return cls(message, status=status, code=code)


def call(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    data: bytes | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 15.0,
    sink: Callable[[bytes], object] | None = None,
) -> tuple[str, bytes]:
    """Send one request; returns (content type, body) of a 2xx answer, else raises.

    With ``sink`` the body is handed over in chunks as it arrives (any size: reports,
    exports) and the returned body is empty; without, it is read whole, up to 16 MiB.
    """
    if not url.startswith(("http://", "https://")):
        raise ServerRejectedError(f"not an http(s) URL: {url}")
    all_headers = {"Accept": "application/json", **(headers or {})}
    if json_body is not None:
        data = json.dumps(json_body).encode()
        all_headers["Content-Type"] = "application/json"
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=all_headers, method=method)  # noqa: S310
    with _open(req, url, timeout) as resp:
        if sink is None:
            return resp.headers.get("Content-Type", ""), _read(resp, url, MAX_RESPONSE_BYTES)
        while chunk := _read(resp, url, 1 << 16):
            sink(chunk)
        return resp.headers.get("Content-Type", ""), b""


def _read(resp: Any, url: str, size: int) -> bytes:
    try:
        return bytes(resp.read(size))
    except (OSError, ValueError) as exc:
        raise ServerUnreachableError(f"the connection to {url} broke: {exc}") from None


def _open(req: urllib.request.Request, url: str, timeout: float) -> Any:
    try:
        return _OPENER.open(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        body = exc.read(65536)
        try:
            err = json.loads(body)["error"]
            code, message = str(err["code"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            code, message = "", f"HTTP {exc.code} {exc.reason}"
        if 300 <= exc.code < 400:
            message = f"the server answered with a redirect (HTTP {exc.code}); not followed"
        raise _error_for(exc.code, code, message) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerUnreachableError(f"cannot reach {url}: {reason}") from None


def call_json(method: str, url: str, **kwargs: Any) -> Any:
    _, body = call(method, url, **kwargs)
    try:
        return json.loads(body)
    except ValueError:
        raise ServerUnreachableError(f"{url} did not answer with JSON") from None
