"""Routes and API keys from the control plane instead of a file (docs/platform.md).

``modelseal gateway --controlplane URL --token-file F`` asks the Platform
API for ``GET /v1/platform/gateway/config``: the same version-1 document a
routes file holds, checked by the same :func:`~modelseal.gateway.routes.parse_config`.
It then polls with ``If-None-Match`` (a 304 costs the control plane one
small query and no body), and swaps a changed configuration in without a
restart; requests in flight finish on the configuration they started with.

When the control plane is unreachable, answers an error, or sends a
document the gateway would refuse, the gateway keeps serving its last good
configuration and says so in its log (and in ``gateway_reloads_total``
with ``result="refused"``); it backs off to at most 30 s between tries and
picks up again as soon as the control plane answers. At start one good
answer is required: a gateway with no routes would refuse every request
without telling anyone why.

The gateway's SM2 private key can come from the same place
(``GET /v1/platform/gateway/key/private``, an issuer or owner token), so it
never has to be copied to the gateway's disk. It is held in memory only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Final

from modelseal.errors import ModelsealError
from modelseal.gateway.routes import GatewayConfig, GatewayConfigError, parse_config

if TYPE_CHECKING:
    from modelseal.gateway.proxy import Gateway

log = logging.getLogger("modelseal.gateway")

CONFIG_PATH: Final = "/v1/platform/gateway/config"
KEY_PATH: Final = "/v1/platform/gateway/key/private"
#: Largest configuration accepted (a few thousand routes and keys).
MAX_CONFIG_BYTES: Final = 8 << 20
MAX_BACKOFF_S: Final = 30.0


class ControlPlaneUnavailableError(ModelsealError):
    """The control plane could not be reached at start, or refused the gateway's token."""

    exit_code = 21


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the token must not follow a redirect somewhere else


_OPENER = urllib.request.build_opener(_NoRedirect)


class ControlPlaneSource:
    """Where a gateway's configuration comes from when it follows a control plane."""

    def __init__(
        self, url: str, token: str, *, interval_s: float = 2.0, timeout_s: float = 10.0
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise GatewayConfigError(f"--controlplane must be an http(s) URL, not {url!r}")
        self.url = url.rstrip("/")
        self.token = token
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.etag: str | None = None
        self.config: GatewayConfig | None = None
        self._wake: asyncio.Event | None = None  # made in follow(), inside the gateway's loop

    # --- at start (synchronous, before the server listens) -------------------------------

    def _get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.url + path,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
        )
        try:
            with _OPENER.open(req, timeout=self.timeout_s) as resp:
                return resp.status, dict(resp.headers), resp.read(MAX_CONFIG_BYTES + 1)
        except urllib.error.HTTPError as exc:
            body = exc.read(4096)
            try:
                message = json.loads(body)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {exc.code}"
            raise ControlPlaneUnavailableError(
                f"the control plane at {self.url} refused {path}: {message}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ControlPlaneUnavailableError(
                f"cannot reach the control plane at {self.url}: {reason}"
            ) from None

    def load(self) -> GatewayConfig:
        """Fetch and check the configuration once; raises if it cannot."""
        _status, headers, body = self._get(CONFIG_PATH)
        config = self._parse(body)
        self.config = config
        self.etag = headers.get("ETag") or headers.get("etag")
        return config

    def private_key_pem(self) -> bytes:
        """The gateway's SM2 private key, kept on the platform (issuer or owner token)."""
        _status, _headers, body = self._get(KEY_PATH)
        try:
            pem = json.loads(body)["private_pem"]
        except (ValueError, KeyError, TypeError):
            raise ControlPlaneUnavailableError(
                "the control plane's answer holds no private key"
            ) from None
        return str(pem).encode("ascii")

    @staticmethod
    def _parse(body: bytes) -> GatewayConfig:
        if len(body) > MAX_CONFIG_BYTES:
            raise GatewayConfigError(f"the configuration is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            data = json.loads(body)
        except ValueError:
            raise GatewayConfigError("the control plane's configuration is not JSON") from None
        return parse_config(data)

    # --- following (in the gateway's event loop) ------------------------------------------

    def wake(self) -> None:
        """Poll now (SIGHUP), instead of at the next interval."""
        if self._wake is not None:
            self._wake.set()

    async def _poll(self, gateway: Gateway) -> bool:
        """One conditional GET; swaps a changed configuration in. False if it failed."""
        import aiohttp

        session = gateway.session
        assert session is not None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if self.etag:
            headers["If-None-Match"] = self.etag
        try:
            async with session.get(
                self.url + CONFIG_PATH,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                if resp.status == 304:
                    return True
                body = await resp.content.read(MAX_CONFIG_BYTES + 1)
                if resp.status != 200:
                    log.error(
                        "control plane answered %d; keeping the last good routes", resp.status
                    )
                    gateway.metrics.reloads.labels("refused").inc()
                    return False
                etag = resp.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.error(
                "control plane unreachable (%s); keeping the last good routes",
                type(exc).__name__,
            )
            gateway.metrics.reloads.labels("refused").inc()
            return False
        try:
            config = self._parse(body)
        except ModelsealError as exc:
            log.error("control plane config refused, keeping the last good routes: %s", exc)
            gateway.metrics.reloads.labels("refused").inc()
            return False
        if gateway.swap(config, "control plane changed"):
            self.config = config
            self.etag = etag
            return True
        return False

    async def follow(self, gateway: Gateway) -> None:
        """Poll forever: every ``interval_s`` while healthy, backing off while failing."""
        self._wake = asyncio.Event()
        delay = self.interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            self._wake.clear()
            try:
                ok = await self._poll(gateway)
            except Exception:
                # a bug here must not stop following: later changes would never arrive
                log.exception("control plane poll failed; keeping the last good routes")
                ok = False
            if ok:
                delay = self.interval_s
            else:
                delay = min(MAX_BACKOFF_S, max(self.interval_s, delay * 2))
                delay *= random.uniform(0.8, 1.0)  # noqa: S311 - jitter, not a secret


__all__ = ["ControlPlaneSource", "ControlPlaneUnavailableError"]
