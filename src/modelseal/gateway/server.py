"""Run the gateway: one process, or N workers sharing the port with SO_REUSEPORT.

With SO_REUSEPORT the kernel spreads connections over the workers' own
listening sockets, which balances better than workers contending for one
accept queue. The parent validates everything first (routes file, key,
Redis) so a mistake is one line and a non-zero exit, keeps the port bound
(not listening) so nothing else takes it, forwards SIGHUP, turns SIGTERM
into a graceful stop of every worker, and restarts a worker that dies.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import multiprocessing
import os
import queue
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any

from modelseal import _prometheus
from modelseal.errors import ListenError, ModelsealError
from modelseal.gateway.proxy import (
    Gateway,
    build_gateway,
    configure_logging,
    run_loop,
    serve_socket,
)
from modelseal.gateway.routes import GatewayConfigError

log = logging.getLogger("modelseal.gateway")


class GatewayWorkersError(ModelsealError):
    """Workers kept dying after start (each one's error is in the log above)."""

    exit_code = 27


@dataclass(frozen=True)
class GatewayOptions:
    routes: str | None
    private_key: str | None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    redis_url: str | None = None
    access_log: bool = True
    passphrase: str | None = None
    #: seconds a connection may sit idle or take to send its request headers
    idle_timeout: float = 30.0
    #: follow this control plane's routes and keys instead of a file (docs/platform.md)
    controlplane: str | None = None
    controlplane_token: str | None = None
    #: take the SM2 private key from the control plane instead of a file
    controlplane_key: bool = False
    poll_interval: float = 2.0


def _build(opts: GatewayOptions, redis_url: str | None) -> Gateway:
    """The gateway, its routes from the file or the control plane (checked once here)."""
    source = None
    private_key: str | bytes | None = opts.private_key
    if opts.controlplane is not None:
        from modelseal.gateway.controlplane_source import ControlPlaneSource

        source = ControlPlaneSource(
            opts.controlplane, opts.controlplane_token or "", interval_s=opts.poll_interval
        )
        if opts.controlplane_key:
            private_key = source.private_key_pem()
    return build_gateway(
        opts.routes, private_key, redis_url, passphrase=opts.passphrase, source=source
    )


def bind(host: str, port: int, *, listen: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        if listen:
            sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(f"{host}:{port} is already in use") from None
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


async def _check_redis(url: str) -> None:
    from modelseal.gateway.ratelimit import RedisRateLimiter

    limiter = RedisRateLimiter(url)
    try:
        await limiter.ping()
    except Exception as exc:
        raise GatewayConfigError(f"cannot reach Redis at {url}: {exc}") from None
    finally:
        await limiter.close()


def _worker(opts: GatewayOptions, ready: Any) -> None:
    # A SIGHUP before the event loop's handler exists must not kill the worker
    # (the default action); the file watcher picks up any change it missed.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    configure_logging(opts.access_log)
    try:
        gateway = _build(opts, opts.redis_url)
        sock = bind(opts.host, opts.port, listen=True)
    except ModelsealError as exc:
        log.error("worker cannot start: %s", exc)
        raise SystemExit(exc.exit_code) from None
    run_loop(
        serve_socket(
            gateway,
            sock,
            idle_timeout=opts.idle_timeout,
            on_ready=lambda: ready.put(os.getpid()),
        )
    )


def run(opts: GatewayOptions) -> None:
    configure_logging(opts.access_log)
    # validate in the parent: a bad file, key or Redis URL never reaches a worker
    _build(opts, None)
    if opts.redis_url:
        asyncio.run(_check_redis(opts.redis_url))
    if opts.workers <= 1:
        sock = bind(opts.host, opts.port, listen=True)
        gateway = _build(opts, opts.redis_url)
        log.warning("modelseal gateway: http://%s:%d", opts.host, sock.getsockname()[1])
        run_loop(serve_socket(gateway, sock, idle_timeout=opts.idle_timeout))
        return
    holder = bind(opts.host, opts.port, listen=False)
    port = holder.getsockname()[1]
    opts = GatewayOptions(**{**opts.__dict__, "port": port})
    metrics_dir = _prometheus.prepare_workers(opts.workers)
    try:
        _supervise(opts)
    finally:
        holder.close()
        _prometheus.cleanup(metrics_dir)


def _supervise(opts: GatewayOptions) -> None:
    ctx = multiprocessing.get_context("spawn")
    stopping = False
    failed = False
    procs: list[Any] = []
    ready_queue = ctx.Queue()
    ready: set[int] = set()

    def start() -> Any:
        p = ctx.Process(target=_worker, args=(opts, ready_queue), daemon=False)
        p.start()
        return p

    def on_stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    def on_hup(signum: int, _frame: Any) -> None:
        for p in procs:
            if p.pid in ready and p.is_alive():
                os.kill(p.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    procs.extend(start() for _ in range(opts.workers))
    log.warning("modelseal gateway: http://%s:%d (%d workers)", opts.host, opts.port, opts.workers)
    restarts: list[float] = []
    while not stopping:
        try:
            pid = ready_queue.get(timeout=0.2)
        except queue.Empty:
            pass
        else:
            ready.add(pid)
            log.warning("gateway worker %d ready", pid)
        for i, p in enumerate(procs):
            if not p.is_alive() and not stopping:
                now = time.monotonic()
                restarts[:] = [t for t in restarts if now - t < 60] + [now]
                if len(restarts) > 5 * opts.workers:
                    failed = True
                    stopping = True
                    break
                log.error("worker %d exited with %s; restarting it", p.pid, p.exitcode)
                procs[i] = start()
    for p in procs:
        if p.is_alive() and p.pid is not None:
            os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        p.join(35)
        if p.is_alive():
            p.kill()
            p.join(5)
    if failed:
        raise GatewayWorkersError("gateway workers keep exiting; stopped (see the log above)")
