"""Settings: typed, frozen, read from the environment once and passed down.

Two bases, both frozen pydantic-settings classes with a default and a one-line description on
every field:

- ``NodeSettings`` holds the node-wide values. Each has a fixed variable name (``MIM_NATS_URL``,
  ``MIM_DATABASE_URL``, ``MIM_LOG_FORMAT``, ...) that stays the same in every service.
- ``ServiceSettings`` adds what every service has but each sets on its own (metrics port, shutdown
  grace, process-pool size). Those fields take the subclass's prefix.

A service writes its class in ``services/<name>/settings.py`` by subclassing ``ServiceSettings``
and setting its prefix to ``MIM_<SERVICE>_``; its own fields and the inherited per-service fields
then read ``MIM_<SERVICE>_<FIELD>`` while the node-wide fields keep their ``MIM_`` names::

    class ValidatorSettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="MIM_VALIDATOR_")

        metrics_port: int = Field(default=9102, ge=0, le=65535, description="Port of /metrics.")
        max_inflight: int = Field(default=256, ge=1, description="Messages validated at once.")

    # MIM_VALIDATOR_MAX_INFLIGHT, MIM_VALIDATOR_METRICS_PORT, MIM_VALIDATOR_SHUTDOWN_GRACE_SECONDS,
    # and MIM_NATS_URL, MIM_DATABASE_URL, ... as for every service.

``__main__`` builds the class with ``load(ValidatorSettings)`` (or hands the class to
``relay.runner.run_service``, which does it); there is no module-level settings object. A bad value
raises ``SettingsError`` naming the variable, the value and the expected type.

The README's configuration table is generated from these classes by ``config_table``; run
``python -m relay.settings README.md`` to rewrite the part of the README between the
``<!-- config-table:begin -->`` and ``<!-- config-table:end -->`` markers, and a test checks that
the committed table matches.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from relay import SettingsError

__all__ = [
    "DAY_SECONDS",
    "MIXIN_CONFIG",
    "TABLE_BEGIN",
    "TABLE_END",
    "LeaseSettings",
    "LocalApiSettings",
    "LogFormat",
    "LogLevel",
    "NetworkSettings",
    "NodeSettings",
    "PoolSettings",
    "ServiceSettings",
    "config_table",
    "discover",
    "env_name",
    "load",
    "redact_url",
    "replace_config_table",
]

_S = TypeVar("_S", bound=BaseSettings)

DAY_SECONDS: Final = 86_400

TABLE_BEGIN = "<!-- config-table:begin -->"
TABLE_END = "<!-- config-table:end -->"

LogFormat = Literal["json", "console", "auto"]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class NodeSettings(BaseSettings):
    """Values shared by every process of one node; each variable keeps its ``MIM_`` name."""

    model_config = SettingsConfigDict(
        env_prefix="MIM_",
        frozen=True,
        extra="ignore",
        env_ignore_empty=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        validation_alias="MIM_NATS_URL",
        description="NATS server URL (with JetStream enabled); the servers of a cluster"
        " comma-separated.",
    )
    database_url: str = Field(
        default="postgresql://mimrelay@127.0.0.1:5432/mimrelay",
        validation_alias="MIM_DATABASE_URL",
        description="PostgreSQL connection URL (the primary: every write goes there).",
    )
    database_read_url: str = Field(
        default="",
        validation_alias="MIM_DATABASE_READ_URL",
        description="PostgreSQL connection URL for what only reads (a streaming replica, or a"
        " pooler in front of several); empty: `MIM_DATABASE_URL`.",
    )
    log_format: Annotated[LogFormat, BeforeValidator(_lower)] = Field(
        default="auto",
        validation_alias="MIM_LOG_FORMAT",
        description="Log output: `json` lines, `console` text, or `auto` (console on a TTY).",
    )
    log_level: Annotated[LogLevel, BeforeValidator(_lower)] = Field(
        default="info",
        validation_alias="MIM_LOG_LEVEL",
        description="Lowest log level written.",
    )
    stream_prefix: str = Field(
        default="MIM",
        pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,31}$",
        validation_alias="MIM_STREAM_PREFIX",
        description="Prefix of JetStream names and subjects, so several nodes can share a server.",
    )
    data_dir: Path = Field(
        default=Path("./data"),
        validation_alias="MIM_DATA_DIR",
        description="Directory for the embedded servers' data and other node state.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        validation_alias="MIM_METRICS_HOST",
        description="Address the metrics and health endpoints listen on (`0.0.0.0` in containers).",
    )
    connect_attempts: int = Field(
        default=30,
        ge=1,
        validation_alias="MIM_CONNECT_ATTEMPTS",
        description="Tries to reach NATS or PostgreSQL at start-up before giving up.",
    )
    connect_retry_seconds: float = Field(
        default=1.0,
        gt=0,
        validation_alias="MIM_CONNECT_RETRY_SECONDS",
        description="Pause between two of those tries.",
    )
    dependency_check_seconds: float = Field(
        default=1.0,
        gt=0,
        validation_alias="MIM_DEPENDENCY_CHECK_SECONDS",
        description="How often a service checks that PostgreSQL answers; "
        "`/healthz` is 503 while it or NATS does not.",
    )
    memory_trim_seconds: float = Field(
        default=60.0,
        ge=0,
        validation_alias="MIM_MEMORY_TRIM_SECONDS",
        description="How often a service hands the memory it has freed back to the system"
        " (`malloc_trim`); 0: never.",
    )
    database_connection_lifetime_seconds: float = Field(
        default=1800.0,
        ge=0,
        validation_alias="MIM_DATABASE_CONNECTION_LIFETIME_SECONDS",
        description="How long a service keeps a PostgreSQL connection before it opens a new one,"
        " so no server backend grows with the node's uptime; 0: for as long as it works.",
    )
    stream_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        validation_alias="MIM_STREAM_REPLICAS",
        description="Servers keeping a copy of each stream, key-value bucket and object store the"
        " node creates: 1 on one nats-server, 3 on a three-server JetStream cluster.",
    )
    stream_max_msgs: int = Field(
        default=1_000_000,
        ge=1,
        validation_alias="MIM_STREAM_MAX_MSGS",
        description="Messages the ingest and accepted streams hold before refusing new ones.",
    )
    stream_max_bytes: int = Field(
        default=1 << 30,
        ge=1,
        validation_alias="MIM_STREAM_MAX_BYTES",
        description="Bytes the ingest and accepted streams hold before refusing new messages.",
    )
    dedupe_window_seconds: float = Field(
        default=600.0,
        gt=0,
        validation_alias="MIM_DEDUPE_WINDOW_SECONDS",
        description="How long JetStream remembers a `Nats-Msg-Id` to drop a repeated publish.",
    )
    rejected_max_age_seconds: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        validation_alias="MIM_REJECTED_MAX_AGE_SECONDS",
        description="How long rejections stay on the rejected stream for inspection.",
    )

    @property
    def read_url(self) -> str:
        """Where to read: ``MIM_DATABASE_READ_URL``, else the primary."""
        return self.database_read_url or self.database_url


class ServiceSettings(NodeSettings):
    """Node-wide values plus the per-service runtime values every service has.

    Subclasses set ``env_prefix="MIM_<SERVICE>_"``; the fields declared here then read
    ``MIM_<SERVICE>_METRICS_PORT`` and so on.
    """

    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of `/metrics` and `/healthz` (0 picks a free one).",
    )
    shutdown_grace_seconds: float = Field(
        default=10.0,
        ge=0,
        description="On SIGTERM, how long in-flight work may finish before cancelling.",
    )


#: The configuration of a mixin of node-wide settings (each field names its ``MIM_`` variable).
MIXIN_CONFIG: Final = SettingsConfigDict(
    frozen=True,
    extra="ignore",
    env_ignore_empty=True,
    validate_by_name=True,
    validate_by_alias=True,
)


class NetworkSettings(BaseSettings):
    """Where the node's Mim API is reached and what its head covers; fixed ``MIM_`` names.

    Every process that faces the network agrees on these (the gateway serves them, the syncer
    announces them, ``mimrelay up`` prints them).

    Mixed in before a service's ``ServiceSettings`` base, like ``relay.policy.PolicySettings``.
    """

    model_config = MIXIN_CONFIG

    network_head_days: int = Field(
        14,
        ge=1,
        le=28,
        validation_alias="MIM_NETWORK_HEAD_DAYS",
        description="Days of the network head: what caches and POST answers cover, and what"
        " retention never touches.",
    )
    network_memory_days: int = Field(
        180,
        ge=1,
        validation_alias="MIM_NETWORK_MEMORY_DAYS",
        description="Objects last referenced longer ago than this are forgotten (§20.6).",
    )
    gateway_host: str = Field(
        "0.0.0.0",  # noqa: S104 - a relay serves the network
        validation_alias="MIM_GATEWAY_HOST",
        description="Address the Mim API listens on.",
    )
    gateway_port: int = Field(
        8090,
        ge=0,
        le=65535,
        validation_alias="MIM_GATEWAY_PORT",
        description="Port the Mim API listens on (0 picks a free one).",
    )
    public_port: int = Field(
        0,
        ge=0,
        le=65535,
        validation_alias="MIM_PUBLIC_PORT",
        description="Port remotes reach our Mim API on, announced in our address and requests"
        " (0: `MIM_GATEWAY_PORT`; set it behind a proxy or a port mapping).",
    )

    tls: bool = Field(
        default=False,
        validation_alias="MIM_TLS",
        description="Serve HTTPS with a self-signed certificate kept in the data directory.",
    )

    @property
    def head_seconds(self) -> int:
        """The network head in seconds."""
        return self.network_head_days * DAY_SECONDS

    def announced_port(self, listening: int | None = None) -> int:
        """The port we announce: ``public_port``, else the port the Mim API listens on."""
        return self.public_port or listening or self.gateway_port


class LeaseSettings(BaseSettings):
    """A service whose replicas take turns at some work (``relay.leases``); reads
    ``MIM_<SERVICE>_LEASE_SECONDS``."""

    lease_seconds: float = Field(
        30.0,
        ge=1,
        description="A replica's hold on shared work (a remote, a schedule) lapses this long after"
        " it stops renewing it (it died, or lost NATS); another replica then takes the work over.",
    )


class LocalApiSettings(BaseSettings):
    """Where the gateway's local listener is: submission, tokens and the API documentation.

    Whoever reaches it writes on the operator's behalf, so it listens on loopback unless the
    operator says otherwise; the command line finds it through the same variables.
    """

    model_config = MIXIN_CONFIG

    local_host: str = Field(
        "127.0.0.1",
        validation_alias="MIM_GATEWAY_LOCAL_HOST",
        description="Address of the local API (`/api/submit` without a token, `/api/tokens`,"
        " `/docs`); whoever reaches it writes as the operator.",
    )
    local_port: int = Field(
        8091,
        ge=0,
        le=65535,
        validation_alias="MIM_GATEWAY_LOCAL_PORT",
        description="Port of the local API (0 picks a free one).",
    )

    @property
    def local_url(self) -> str:
        """The local API's URL, as a process on this host reaches it."""
        host = "127.0.0.1" if self.local_host in ("", "0.0.0.0") else self.local_host  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.local_port}"


class PoolSettings(BaseSettings):
    """The PostgreSQL pool of a service that has one; reads ``MIM_<SERVICE>_POOL_SIZE``."""

    pool_size: int = Field(4, ge=1, description="Connections in the PostgreSQL pool.")


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` of ``cls``."""
    info = cls.model_fields[field]
    if isinstance(info.validation_alias, str):
        return info.validation_alias.upper()
    prefix = str(cls.model_config.get("env_prefix", ""))
    return f"{prefix}{field}".upper()


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _expected(annotation: Any) -> str:
    """A short human name for a field's type."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _expected(typing.get_args(annotation)[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected(a) for a in typing.get_args(annotation))
    names = {
        int: "an integer",
        float: "a number",
        bool: "a boolean (true/false)",
        str: "a string",
        Path: "a path",
        type(None): "empty",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _problem(cls: type[BaseSettings], error: Any) -> tuple[str, str, str]:
    loc = error.get("loc") or ("?",)
    key = str(loc[0])
    field = key if key in cls.model_fields else None
    if field is None:
        for name, info in cls.model_fields.items():
            alias = info.validation_alias
            if isinstance(alias, str) and alias.upper() == key.upper():
                field = name
    variable = env_name(cls, field) if field else key.upper()
    value = error.get("input")
    shown = repr(redact_url(value) if isinstance(value, str) else value)
    expected = _expected(cls.model_fields[field].annotation) if field else "a valid value"
    detail = str(error.get("msg", "")).rstrip(".")
    if detail:
        expected = f"{expected} ({detail[:1].lower()}{detail[1:]})"
    return variable, shown, expected


def load(cls: type[_S], **overrides: Any) -> _S:
    """Build ``cls`` from the environment (and ``overrides``); raise ``SettingsError`` if invalid.

    The message names each bad variable, its value and the expected type, one per line.
    """
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = [_problem(cls, err) for err in exc.errors()]
        lines = [f"{var}={value}: expected {expected}" for var, value, expected in problems]
        message = "invalid settings: " + "; ".join(lines)
        raise SettingsError(message, problems) from None


def _default_text(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, Path):
        text = value.as_posix() if str(value) == "." else f"./{value.as_posix()}"
    else:
        text = str(value)
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    return f"`{text}`" if text else '`""`'


def config_table(classes: Sequence[type[BaseSettings]]) -> str:
    """A Markdown table (variable, default, description) of every setting of ``classes``.

    A variable shared by several classes (the node-wide ones) appears once, where first seen.
    """
    rows = ["| Variable | Default | Description |", "|---|---|---|"]
    seen: set[str] = set()
    for cls in classes:
        for field, info in cls.model_fields.items():
            variable = env_name(cls, field)
            if variable in seen:
                continue
            seen.add(variable)
            description = (info.description or "").replace("|", "\\|")
            rows.append(f"| `{variable}` | {_default_text(info)} | {description} |")
    return "\n".join(rows) + "\n"


def replace_config_table(text: str, table: str) -> str:
    """``text`` with the part between the table markers replaced by ``table``."""
    begin, end = text.find(TABLE_BEGIN), text.find(TABLE_END)
    if begin < 0 or end < begin:
        raise ValueError(f"markers {TABLE_BEGIN} and {TABLE_END} not found in order")
    return text[: begin + len(TABLE_BEGIN)] + "\n\n" + table + "\n" + text[end:]


def discover(package: str = "services") -> list[type[BaseSettings]]:
    """``NodeSettings`` then every settings class defined in ``<package>.<service>.settings``.

    Services are taken in name order, classes in definition order.
    """
    classes: list[type[BaseSettings]] = [NodeSettings]
    try:
        root = importlib.import_module(package)
    except ImportError:
        return classes
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda m: m.name):
        name = f"{package}.{info.name}.settings"
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name in (name, f"{package}.{info.name}"):
                continue
            raise
        classes.extend(_defined_in(module, vars(module).values()))
    return classes


def _defined_in(module: types.ModuleType, values: Iterable[object]) -> list[type[BaseSettings]]:
    found: list[type[BaseSettings]] = []
    for value in values:
        if (
            isinstance(value, type)
            and issubclass(value, BaseSettings)
            and value.__module__ == module.__name__
        ):
            found.append(value)
    return found


def _main(argv: list[str]) -> int:
    """``python -m relay.settings [README.md]``: print the table, or rewrite it in the file."""
    table = config_table(discover())
    if not argv:
        sys.stdout.write(table)
        return 0
    path = Path(argv[0])
    path.write_text(replace_config_table(path.read_text(encoding="utf-8"), table), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
