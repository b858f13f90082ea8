"""One settings class for the server: environment ``MODELSEAL_*``, then flags.

``--print-config`` shows :meth:`Settings.masked`, which never prints a
password in the database URL or a key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "modelseal" / "controlplane"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELSEAL_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    #: ``postgresql://user:pass@host/db`` or ``sqlite:///path``; default SQLite in data_dir
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    #: 32 random bytes; default ``data_dir/master.key`` created 0600 on first start
    master_key_file: Path | None = None
    #: the URL devices reach this server at (goes into licenses as heartbeat.url)
    public_url: str | None = None
    #: largest request body accepted, bytes (activation requests are < 64 KiB)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)
    #: batch heartbeat writes (one commit per batch; replies wait for it)
    heartbeat_group_commit: bool = True
    #: serve POST /v1/heartbeat before FastAPI's router (same answers, less CPU)
    heartbeat_fast_path: bool = True
    #: deliver webhooks from this process (a thread; several processes share by lease)
    webhook_worker: bool = True
    #: seconds between looks at the outbox when idle
    webhook_poll: float = Field(default=1.0, gt=0, le=60)
    #: first retry after this many seconds, doubling per attempt up to the cap
    webhook_retry_base: float = Field(default=5.0, gt=0, le=3600)
    webhook_retry_cap: float = Field(default=600.0, gt=0, le=86400)
    #: seconds between scans for scheduled events (license.expiring, heartbeat.missed, ...)
    webhook_scan: float = Field(default=60.0, gt=0, le=86400)
    #: let webhooks go to loopback, private and link-local addresses (on-premises receivers;
    #: off by default: an owner must not reach the server's own network through them)
    webhook_allow_private: bool = False
    #: a PKCS#11 library for signing keys kept in a token (controlplane/hsm.py)
    pkcs11_module: Path | None = None
    pkcs11_token: str | None = None
    pkcs11_pin_file: Path | None = None
    #: Platform: where deployments run (``local``, ``kubernetes``, ``podman``), one
    #: backend instance per server process (docs/platform.md)
    deploy_backend: Literal["local", "kubernetes", "podman"] = "local"
    #: Platform: the NodePort range deployments are given ports from
    node_port_range: str = "30000-32767"
    #: Platform: largest design/usage/test document accepted, bytes
    max_document_bytes: int = Field(default=16 << 20, ge=1024, le=1 << 30)
    #: requests per minute (and burst) per token or session on /v1/ (0: no limit)
    rate_limit_credential: int = Field(default=3000, ge=0)
    #: requests per minute (and burst) per client address without a credential
    #: (activation, release, login; 0: no limit); behind a proxy all share one
    rate_limit_address: int = Field(default=600, ge=0)
    #: argon2 password hashes running at once per process, 64 MiB each
    #: (0: the usable CPUs, 2 to 8); logins over the limit wait their turn
    argon2_concurrency: int = Field(default=0, ge=0, le=64)

    @field_validator("node_port_range")
    @classmethod
    def _port_range(cls, value: str) -> str:
        from modelseal.deploy.nodeports import NodePortRange
        from modelseal.errors import ModelsealError

        try:
            return str(NodePortRange.parse(value))
        except ModelsealError as exc:
            raise ValueError(str(exc)) from None

    @property
    def sqlalchemy_url(self) -> str:
        url = self.database_url or f"sqlite:///{self.data_dir / 'controlplane.db'}"
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def master_key_path(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    @property
    def heartbeat_base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def masked(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["database_url"] = mask_url(self.sqlalchemy_url)
        data["master_key_file"] = str(self.master_key_path)
        return data


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
