"""Settings of the RabbitMQ connection and the names derived from its prefix: `[amqp]`.

`url` is one URL, or a list of the nodes of one cluster (docs/scale-out.md): a list in
TOML, a comma-separated string in `SENSORD_AMQP__URL`. One URL stays exactly as before.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from sensord.ops.settings import Duration, Section


def safe_node(url: str) -> str:
    """`host:port` of an AMQP URL: how a node is named in logs, /readyz and status (no
    credentials, no vhost)."""
    parts = urlsplit(url)
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    return f"{parts.hostname or '?'}:{port}"


class AmqpSettings(Section):
    url: SecretStr | list[SecretStr] = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    prefix: str = "sensord"
    reconnect_interval: float = Field(default=2.0, gt=0)
    publish_timeout: float = Field(default=10.0, gt=0)
    max_pending: int = Field(default=100_000, ge=1)
    # on SIGTERM: keep trying to publish held alert events for up to this long
    stop_grace: Duration = 5.0
    # quorum queues' replicas at declaration (x-quorum-initial-group-size); None: 3 when
    # 3 or more nodes are listed in `url`, else (and with 0) the argument is left out
    quorum_group_size: int | None = Field(default=None, ge=0)
    # deliveries of one message before RabbitMQ dead-letters it (x-delivery-limit); None:
    # no limit (the first releases' queues: adding it to an existing queue is
    # PRECONDITION_FAILED, docs/scale-out.md "Upgrading")
    delivery_limit: int | None = Field(default=None, ge=1)
    # amqps://: CA bundle to verify the nodes, client certificate and key
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False  # true skips the host name check (never the chain)
    # credentials out of the URL: `username` + the password in `password_file`
    username: str | None = None
    password_file: Path | None = None

    @field_validator("url", mode="before")
    @classmethod
    def _split_url(cls, v: object) -> object:
        """A comma-separated string (the environment) is a list of nodes."""
        if isinstance(v, str) and "," in v:
            return [u.strip() for u in v.split(",") if u.strip()]
        if isinstance(v, list) and len(v) == 1:
            return v[0]  # one node: the same as a string
        return v

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: SecretStr | list[SecretStr]) -> SecretStr | list[SecretStr]:
        urls = v if isinstance(v, list) else [v]
        if not urls:
            raise ValueError("give at least one amqp:// URL")
        schemes = set()
        for u in urls:
            parts = urlsplit(u.get_secret_value())
            if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
                # never echo the URL: it may hold a password
                raise ValueError("each URL must be amqp://host:port/ or amqps://host:port/")
            schemes.add(parts.scheme)
        if len(schemes) > 1:
            raise ValueError("mix of amqp:// and amqps:// nodes: use one scheme for a cluster")
        return v

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError("only letters, digits, '_', '-' and '.' are allowed")
        return v

    @model_validator(mode="after")
    def _check_tls(self) -> AmqpSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if not self.tls and (self.ca_file or self.cert_file or self.tls_insecure):
            raise ValueError("ca_file, cert_file, key_file and tls_insecure need amqps:// URLs")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        return self

    @property
    def urls(self) -> list[str]:
        """Every node's URL as written (credentials included: never log these)."""
        raw = self.url if isinstance(self.url, list) else [self.url]
        return [u.get_secret_value() for u in raw]

    @property
    def tls(self) -> bool:
        return urlsplit(self.urls[0]).scheme == "amqps"

    @property
    def nodes(self) -> list[str]:
        """`host:port` of each node, for logs and status."""
        return [safe_node(u) for u in self.urls]

    def connection_urls(self) -> list[str]:
        """The URLs to connect to: with `username` + `password_file`, their credentials."""
        urls = self.urls
        if self.username is None:
            return urls
        password = ""
        if self.password_file is not None:
            password = self.password_file.read_text(encoding="utf-8").strip()
        userinfo = quote(self.username, safe="")
        if password:
            userinfo += ":" + quote(password, safe="")
        out = []
        for u in urls:
            parts = urlsplit(u)
            host = parts.hostname or ""
            if ":" in host:  # IPv6 literal
                host = f"[{host}]"
            netloc = f"{userinfo}@{host}" + (f":{parts.port}" if parts.port else "")
            out.append(parts._replace(netloc=netloc).geturl())
        return out

    @property
    def group_size(self) -> int | None:
        """x-quorum-initial-group-size to declare, if any."""
        if self.quorum_group_size is not None:
            return self.quorum_group_size or None
        return 3 if len(self.urls) >= 3 else None

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.alerts"

    def notify_queue(self, channel: str) -> str:
        return f"{self.prefix}.notify.{channel}"

    def dead_queue(self, channel: str) -> str:
        return f"{self.prefix}.notify.{channel}.dead"

    @property
    def quarantine_queue(self) -> str:
        return f"{self.prefix}.quarantine"
