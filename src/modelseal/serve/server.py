"""Build the service from its configuration and run it under uvicorn.

Everything that can fail for a user reason (license, model, handler, key
file, address in use) fails in the parent process before any worker
starts, so ``modelseal serve`` prints one line and exits non-zero instead
of a worker dying in a loop. Workers rebuild the same app from the same
JSON configuration (they are separate processes with their own Guard).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from pathlib import Path
from typing import Any

from modelseal import _prometheus
from modelseal.errors import ListenError
from modelseal.serve.app import (
    MODEL_PREFIX,
    ASGIApp,
    CanonicalModelPath,
    EnvelopeMiddleware,
    MetricsMiddleware,
    ModelService,
    ServeMetrics,
)
from modelseal.serve.config import ENV, ServeConfig
from modelseal.serve.handlers import HandlerError, default_handler, import_handler

log = logging.getLogger("modelseal.serve")

#: Exempt from the Guard: probes and scrapes must work while a license is refused.
EXEMPT = ("/v2/health", "/metrics")


def counted_call(path: str) -> bool:
    """Only inference uses one of the license's calls. Metadata, readiness and
    the server's own routes are still checked (a refused license answers
    nothing) but are not counted: a client's or the gateway's metadata reads
    must not spend a quota sold as inference calls."""
    return path.startswith(MODEL_PREFIX) and path.endswith("/infer")


def build_app(config: ServeConfig) -> tuple[ASGIApp, ModelService]:
    """Guard (verified now), model (decrypted in memory), handler, and the layers."""
    from modelseal.crypto import load_public_key
    from modelseal.envelope import EnvelopeSealer
    from modelseal.guard import Guard, LicenseASGIMiddleware
    from modelseal.sealed import read_header

    sealer = None
    if config.envelope_key is not None:
        sealer = EnvelopeSealer(load_public_key(config.envelope_key), aead=config.envelope_aead)
    # A handler that cannot be imported fails before the model is decrypted.
    handler = import_handler(config.handler) if config.handler else None
    header = read_header(config.model)
    # The product this service is: the model it serves (as modelseal.load does),
    # so a license for another product is refused at start.
    guard = Guard(
        config.license,
        list(config.trust),
        state_dir=config.state_dir,
        audience=header.model_id or header.key_id,
    )
    model = guard.load(config.model, config.framework)
    if handler is None:
        handler = default_handler(model)
    try:
        handler.load(model)
    except HandlerError:
        raise
    except Exception as exc:
        raise HandlerError(f"the handler's load() failed: {exc}") from None
    name = config.name or header.model_id or Path(config.model).stem
    service = ModelService(handler, name=name, max_body=config.max_body, threads=config.threads)
    metrics = ServeMetrics(name)
    app: ASGIApp = LicenseASGIMiddleware(
        service,
        guard,
        features=dict(config.features),
        exempt=EXEMPT,
        counted=counted_call,
    )
    app = CanonicalModelPath(app, service.version)
    if sealer is not None:
        # Everything but /metrics (outside this layer) is sealed, health included:
        # probes read the status, and through a decrypting route nothing plain passes.
        app = EnvelopeMiddleware(app, sealer, prefix="/", metrics=metrics)
    return MetricsMiddleware(app, metrics), service


def worker_app() -> ASGIApp:
    """uvicorn factory for worker processes (``--workers`` > 1)."""
    app, _ = build_app(ServeConfig.from_env())
    return app


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"{host}:{port} is already in use") from None
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def run(config: ServeConfig, *, host: str, port: int, workers: int = 1) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests finish first (uvicorn's graceful exit)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    sock = bind(host, port)
    metrics_dir = _prometheus.prepare_workers(workers)
    try:
        app, _ = build_app(config)  # validates everything in the parent
        common: dict[str, Any] = dict(
            host=host,
            port=port,
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=30,
            server_header=False,
        )
        log.warning("modelseal serve: http://%s:%d (%d worker(s))", host, port, workers)
        if workers <= 1:
            uvicorn.Server(uvicorn.Config(app, **common)).run(sockets=[sock])
            return
        os.environ[ENV] = config.to_env()
        del app
        cfg = uvicorn.Config(
            "modelseal.serve.server:worker_app", factory=True, workers=workers, **common
        )
        Multiprocess(cfg, sockets=[sock]).run()
    finally:
        sock.close()
        _prometheus.cleanup(metrics_dir)
