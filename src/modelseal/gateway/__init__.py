"""The gateway (docs/gateway.md): the one door users reach models through.

Routes by longest prefix from a YAML file, authenticates API keys (stored
as SHA-256 hashes), rate-limits per key (in memory or shared in Redis),
proxies to model services over a pooled connection, decrypts their output
envelopes, and logs one line per request. Needs the ``gateway`` extra
(aiohttp, httptools, pyyaml, prometheus-client; redis for shared limits).
"""

from modelseal.gateway.routes import (
    ApiKey,
    GatewayConfig,
    GatewayConfigError,
    Rate,
    Route,
    RoutesFileError,
    check_key_name,
    hash_key,
    load_config,
    new_api_key,
    parse_config,
)

__all__ = [
    "ApiKey",
    "GatewayConfig",
    "GatewayConfigError",
    "Rate",
    "Route",
    "RoutesFileError",
    "check_key_name",
    "hash_key",
    "load_config",
    "new_api_key",
    "parse_config",
]
