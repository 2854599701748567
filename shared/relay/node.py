"""The node supervisor behind ``mimrelay up``: servers first, then the services, kept running.

Contract:

- Start nats-server and PostgreSQL (``relay.node_servers``), unless ``MIM_NATS_URL`` /
  ``MIM_DATABASE_URL`` point at servers of their own; apply the store's migrations and ensure the
  streams, so every service starts against a ready bus and schema.
- Start each service replica as a child process ``python -m <module>`` (``relay.node_services``),
  each with its own metrics port (``MIM_<SERVICE>_METRICS_PORT``), logging to our stdout.
- Keep both running. A replica that exits is started again after a pause that doubles from
  ``restart_min_seconds`` up to ``restart_max_seconds``; a server that exits is started again on
  its data directory and ports after a pause from ``server_restart_min_seconds`` up to
  ``server_restart_max_seconds``. A pause is reset once the process has run for
  ``restart_reset_seconds``. A replica exiting with status 2 (bad settings), or a server failing
  ``server_failures_max`` times in a row, stops the node (exit status 1) with a message naming
  it: restarting would not help.
- On SIGINT or SIGTERM: SIGTERM to every child (they drain), SIGKILL to the process group of any
  still running after ``stop_timeout_seconds``, then nats-server, then PostgreSQL. A second signal
  is forwarded, which cuts the children's grace short.
- ``<data_dir>/node.json`` describes the running node (pids, URLs, the servers' state, metrics
  endpoints) for ``mimrelay status``, and ``<data_dir>/prometheus-targets.json`` lists the
  metrics endpoints (``relay.node_state``); both are rewritten on every change, and ``node.json``
  is marked ``stopped`` at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any, Final

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from relay import RelayError
from relay.embedded import free_port
from relay.logging import get_logger
from relay.node_servers import NodeServers
from relay.node_services import EXIT_BAD_SETTINGS, Replicas, ServiceSpec
from relay.node_state import STATE_FILE, TARGETS_FILE, announce, read_state, write_state
from relay.restarts import Backoff
from relay.settings import NodeSettings, redact_url

__all__ = [
    "EXIT_BAD_SETTINGS",
    "STATE_FILE",
    "TARGETS_FILE",
    "NodeSupervisor",
    "NodeSupervisorSettings",
    "ServiceSpec",
    "plan_services",
    "read_state",
]

_TICK_SECONDS: Final = 0.1
_REPLICATED: Final = ("validator", "miner")  # services run as numbered replicas
_GATEWAY_SHARING: Final = {"MIM_GATEWAY_REUSE_PORT": "true"}  # replicas on one API port

_log = get_logger("relay.node")


class NodeSupervisorSettings(NodeSettings):
    """How ``mimrelay up`` runs the node; its own fields read ``MIM_NODE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MIM_NODE_")

    gateways: int = Field(
        1, ge=1, le=64, description="Gateway replicas, sharing the API port (one builds caches)."
    )
    validators: int = Field(
        1, ge=0, le=64, description="Validator replicas (each checks on one core)."
    )
    miners: int = Field(1, ge=0, le=64, description="Miner replicas.")
    metrics_port_base: int = Field(
        9101,
        ge=0,
        le=65000,
        description="First metrics port; replicas take the next ones in turn (0: free ports).",
    )
    restart_min_seconds: float = Field(
        1.0, gt=0, description="Pause before restarting a crashed service; doubles each time."
    )
    restart_max_seconds: float = Field(
        30.0, gt=0, description="Longest pause before restarting a crashed service."
    )
    restart_reset_seconds: float = Field(
        60.0, gt=0, description="A service up this long gets the shortest pause again."
    )
    stop_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="On stop, how long services may drain before being killed "
        "(above every service's shutdown grace).",
    )
    nats_profile_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Loopback port where the embedded nats-server serves Go's pprof profiles "
        "(heap, goroutines), to see what its memory holds; 0: off.",
    )
    nats_memory_limit_bytes: int = Field(
        0,
        ge=0,
        description="Soft memory limit of the embedded nats-server's Go runtime (GOMEMLIMIT): "
        "near it the server collects sooner and hands idle memory back; 0: none.",
    )
    server_stop_seconds: float = Field(
        20.0, gt=0, description="How long nats-server and PostgreSQL may take to stop."
    )
    server_restart_min_seconds: float = Field(
        1.0,
        gt=0,
        description="Pause before restarting nats-server or PostgreSQL after it exited; "
        "doubles each time.",
    )
    server_restart_max_seconds: float = Field(
        30.0, gt=0, description="Longest pause before restarting nats-server or PostgreSQL."
    )
    server_failures_max: int = Field(
        5,
        ge=1,
        description="Exits or failed starts in a row (none followed by a run of "
        "restart_reset_seconds) after which nats-server or PostgreSQL stops the node.",
    )


def _has_main(package: str) -> bool:
    """True if ``python -m <package>`` can run (its ``__main__.py`` exists)."""
    import importlib.util  # noqa: PLC0415 - only needed here

    try:
        return importlib.util.find_spec(f"{package}.__main__") is not None
    except ModuleNotFoundError:
        return False


def plan_services(
    *,
    validators: int,
    miners: int,
    metrics_port_base: int,
    syncer: bool | None = None,
    gateways: int = 1,
) -> list[ServiceSpec]:
    """The replicas of one node in start order: gateways, store, validators, miners, syncer.

    Metrics ports count up from ``metrics_port_base`` in that order (0: a free port each). The
    syncer is included when ``services/syncer/__main__.py`` exists (or as ``syncer`` says).
    Several gateways are numbered and share the API port (the kernel spreads the connections).
    """
    if syncer is None:
        syncer = _has_main("services.syncer")
    wanted: list[tuple[str, int, str, tuple[str, ...]]] = [
        ("gateway", gateways, "services.gateway", ()),
        ("store", 1, "services.store", ()),
        ("validator", validators, "services.validator", ()),
        ("miner", miners, "services.miner", ()),
    ]
    if syncer:
        wanted.append(("syncer", 1, "services.syncer", ()))
    specs: list[ServiceSpec] = []
    for service, count, module, args in wanted:
        numbered = service in _REPLICATED or count > 1
        shared = _GATEWAY_SHARING if service == "gateway" and count > 1 else {}
        for n in range(1, count + 1):
            port = metrics_port_base + len(specs) if metrics_port_base else free_port()
            name = f"{service}-{n}" if numbered else service
            env = {f"MIM_{service.upper()}_METRICS_PORT": str(port), **shared}
            specs.append(ServiceSpec(name, service, module, port, args, env))
    return specs


class NodeSupervisor:
    """Runs one node until a signal; see the module docstring."""

    def __init__(
        self,
        settings: NodeSupervisorSettings,
        specs: Sequence[ServiceSpec],
        *,
        extra_env: Mapping[str, str] | None = None,
        api_url: str = "",
        local_api_url: str = "",
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.absolute()
        self.specs = list(specs)
        self.extra_env = dict(extra_env or {})
        self.api_url = api_url
        self.local_api_url = local_api_url
        self._announce = announce or (lambda _line: None)
        self._announced = False
        s = settings
        self.servers = NodeServers(
            self.data_dir,
            lambda: Backoff(
                s.server_restart_min_seconds, s.server_restart_max_seconds, s.restart_reset_seconds
            ),
            failures_max=s.server_failures_max,
            stop_seconds=s.server_stop_seconds,
            nats_profile_port=s.nats_profile_port,
            nats_memory_limit=s.nats_memory_limit_bytes,
        )
        self.replicas = Replicas(
            self.specs,
            lambda: Backoff(s.restart_min_seconds, s.restart_max_seconds, s.restart_reset_seconds),
            lambda: self._signals,
        )
        self._signals = 0
        self._failure: str | None = None

    @property
    def nats_url(self) -> str:
        return self.servers.nats_url

    @property
    def database_url(self) -> str:
        return self.servers.database_url

    # --- signals -------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            _log.info("node_stopping", signal=signal.Signals(signum).name)

    @property
    def stopping(self) -> bool:
        return self._signals > 0 or self._failure is not None

    # --- the whole life ------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, supervise until a signal, stop everything; the exit status."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            env = os.environ
            self.servers.start(env.get("MIM_NATS_URL", ""), env.get("MIM_DATABASE_URL", ""))
            if not self.stopping:
                asyncio.run(self._prepare())
            self.replicas.env = self._env()
            while not self.stopping:
                self._tick()
                time.sleep(_TICK_SECONDS)
        except RelayError as exc:
            self._failure = str(exc)
            _log.error("node_failed", error=str(exc))
        finally:
            self.replicas.stop(self.settings.stop_timeout_seconds)
            self.servers.stop()
            self._write_state("stopped")
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        _log.info("node_stopped", failure=self._failure)
        if self._failure:
            self._announce(f"mimrelay node stopped: {self._failure}")
        return 1 if self._failure else 0

    def _tick(self) -> None:
        changed = self.servers.poll()
        if not self.stopping and self.servers.failure is None:
            changed |= self.replicas.poll(lambda: self.stopping)
        self._failure = self._failure or self.servers.failure or self.replicas.failure
        if changed:
            self._write_state("running")

    # --- servers -------------------------------------------------------------------------------

    async def _prepare(self) -> None:
        """Migrate the schema and ensure the streams before any service starts."""
        from relay.bus import Layout, StreamLimits, ensure_streams  # noqa: PLC0415
        from relay.connect import close_nats, close_pool, connect_nats, connect_pool  # noqa: PLC0415
        from relay.db.schema import migrate  # noqa: PLC0415

        attempts, delay = self.settings.connect_attempts, self.settings.connect_retry_seconds
        pool = await connect_pool(self.database_url, attempts=attempts, delay=delay, max_size=1)
        try:
            applied = await migrate(pool)
        finally:
            await close_pool(pool)
        nc = await connect_nats(self.nats_url, "node", attempts=attempts, delay=delay)
        try:
            layout = Layout.from_settings(self.settings)
            await ensure_streams(nc.jetstream(), layout, StreamLimits.from_settings(self.settings))
        finally:
            await close_nats(nc)
        _log.info("node_prepared", migrations_applied=applied)

    # --- children ------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {
            "MIM_NATS_URL": self.nats_url,
            "MIM_DATABASE_URL": self.database_url,
            "MIM_DATA_DIR": str(self.data_dir),
            **self.extra_env,
        }

    # --- state file ----------------------------------------------------------------------------

    def state(self, status: str) -> dict[str, Any]:
        """What ``node.json`` holds: enough for ``mimrelay status`` and for tests."""
        servers = self.servers
        return {
            "state": status,
            "pid": os.getpid(),
            "data_dir": str(self.data_dir),
            "stream_prefix": self.settings.stream_prefix,
            "api_url": self.api_url,
            "local_api_url": self.local_api_url,
            "nats_url": redact_url(self.nats_url),
            "nats_monitor_url": servers.nats_monitor_url,
            "nats_profile_url": servers.nats_profile_url,
            "nats_pid": servers.nats.entry()["pid"] if servers.nats else None,
            "database_url": redact_url(self.database_url),
            "postgres_pid": servers.postgres.entry()["pid"] if servers.postgres else None,
            "servers": servers.state(),
            "services": [replica.state() for replica in self.replicas.all],
        }

    def _write_state(self, status: str) -> None:
        state = self.state(status)
        write_state(self.data_dir, state, self.specs)
        if status == "running" and not self._announced:
            self._announced = True
            announce(self._announce, state, self.specs)
