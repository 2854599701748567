"""The node supervisor behind ``mimrelay up``: servers first, then the services, kept running.

Contract:

- Start nats-server (JetStream, store in ``<data_dir>/nats``) and PostgreSQL (cluster in
  ``<data_dir>/postgres``) through ``relay.embedded``, unless ``MIM_NATS_URL`` /
  ``MIM_DATABASE_URL`` point at servers of their own; apply the store's migrations and ensure the
  streams, so every service starts against a ready bus and schema.
- Start each service replica as a child process ``python -m <module>``, each with its own metrics
  port (``MIM_<SERVICE>_METRICS_PORT``), logging to our stdout.
- A child that exits while the node runs is started again after a pause that doubles from
  ``restart_min_seconds`` up to ``restart_max_seconds``; the pause is reset once a child has run
  for ``restart_reset_seconds``. A child exiting with status 2 (bad settings) stops the node:
  restarting it would not help.
- On SIGINT or SIGTERM: SIGTERM to every child (they drain), SIGKILL to the process group of any
  still running after ``stop_timeout_seconds``, then nats-server, then PostgreSQL. A second signal
  is forwarded, which cuts the children's grace short.
- ``<data_dir>/node.json`` describes the running node (pids, URLs, metrics endpoints) for
  ``mimrelay status``; it is rewritten on every change and marked ``stopped`` at the end.
  ``<data_dir>/prometheus-targets.json`` lists the metrics endpoints for Prometheus' file discovery
  (``deploy/prometheus/prometheus-up.yml``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from relay import RelayError
from relay.embedded import NatsServer, PostgresServer, free_port
from relay.logging import get_logger
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

STATE_FILE: Final = "node.json"
TARGETS_FILE: Final = "prometheus-targets.json"
EXIT_BAD_SETTINGS: Final = 2  # relay.runner's exit status for invalid settings
_TICK_SECONDS: Final = 0.1
_PR_SET_PDEATHSIG: Final = 1
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
    server_stop_seconds: float = Field(
        20.0, gt=0, description="How long nats-server and PostgreSQL may take to stop."
    )


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One replica to run: ``python -m <module> <args>`` with ``env`` added."""

    name: str  # "validator-2"
    service: str  # "validator"
    module: str
    metrics_port: int
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]


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


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when the supervisor dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        # Runs between fork and exec: no imports, no locks, no logging.
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


class _Child:
    """A replica and the process currently running it, with its restart state."""

    def __init__(self, spec: ServiceSpec, min_delay: float) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.delay = min_delay
        self.next_start: float | None = 0.0  # due now

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill_group(self) -> None:
        """SIGKILL whatever is left of the child's process group (its worker processes too)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


class NodeSupervisor:
    """Runs one node until a signal; see the module docstring."""

    def __init__(
        self,
        settings: NodeSupervisorSettings,
        specs: Sequence[ServiceSpec],
        *,
        extra_env: Mapping[str, str] | None = None,
        api_url: str = "",
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.absolute()
        self.children = [_Child(spec, settings.restart_min_seconds) for spec in specs]
        self.extra_env = dict(extra_env or {})
        self.api_url = api_url
        self._announce = announce or (lambda _line: None)
        self.nats: NatsServer | None = None
        self.postgres: PostgresServer | None = None
        self.nats_url = ""
        self.database_url = ""
        self._signals = 0
        self._forwarded = 0
        self._failure: str | None = None

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
            self._start_servers()
            if not self.stopping:
                asyncio.run(self._prepare())
            while not self.stopping:
                self._tick()
                time.sleep(_TICK_SECONDS)
        except RelayError as exc:
            self._failure = str(exc)
            _log.error("node_failed", error=str(exc))
        finally:
            self._stop_children()
            self._stop_servers()
            self._write_state("stopped")
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        _log.info("node_stopped", failure=self._failure)
        return 1 if self._failure else 0

    # --- servers -------------------------------------------------------------------------------

    def _start_servers(self) -> None:
        env_nats = os.environ.get("MIM_NATS_URL", "")
        env_db = os.environ.get("MIM_DATABASE_URL", "")
        if env_nats:
            self.nats_url = env_nats
        else:
            self.nats = NatsServer(self.data_dir / "nats").start()
            self.nats_url = self.nats.url
            _log.info("nats_started", url=self.nats_url, pid=self.nats.pid)
        if env_db:
            self.database_url = env_db
        else:
            self.postgres = PostgresServer(self.data_dir / "postgres").start()
            self.database_url = self.postgres.dsn
            _log.info("postgres_started", url=self.database_url, pid=self.postgres.pid)

    async def _prepare(self) -> None:
        """Migrate the schema and ensure the streams before any service starts."""
        from relay.bus import Layout, StreamLimits, ensure_streams  # noqa: PLC0415
        from relay.db.schema import migrate  # noqa: PLC0415
        from relay.runner import close_nats, close_pool, connect_nats, connect_pool  # noqa: PLC0415

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

    def _stop_servers(self) -> None:
        timeout = self.settings.server_stop_seconds
        for server in (self.nats, self.postgres):
            if server is not None and server.running:
                pid = server.pid
                status = server.stop(timeout)
                _log.info("server_stopped", server=server.log_path.stem, pid=pid, status=status)

    # --- children ------------------------------------------------------------------------------

    def _env(self, spec: ServiceSpec) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "MIM_NATS_URL": self.nats_url,
            "MIM_DATABASE_URL": self.database_url,
            "MIM_DATA_DIR": str(self.data_dir),
            **self.extra_env,
            **spec.env,
        }

    def _start(self, child: _Child) -> None:
        child.proc = subprocess.Popen(
            child.spec.argv,
            env=self._env(child.spec),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # only calls prctl(2) between fork and exec; see _die_with_parent
            preexec_fn=_die_with_parent(),  # noqa: PLW1509
        )
        child.started_at = time.monotonic()
        child.next_start = None
        _log.info(
            "service_started", name=child.spec.name, pid=child.proc.pid,
            metrics_port=child.spec.metrics_port, restarts=child.restarts,
        )  # fmt: skip

    def _tick(self) -> None:
        now = time.monotonic()
        changed = False
        for child in self.children:
            if child.proc is not None and child.next_start is None:
                status = child.proc.poll()
                if status is not None:
                    self._exited(child, status, now)
                    changed = True
            if self.stopping:
                return
            if child.next_start is not None and now >= child.next_start:
                self._start(child)
                changed = True
        if changed:
            self._write_state("running")

    def _exited(self, child: _Child, status: int, now: float) -> None:
        child.kill_group()
        if status == EXIT_BAD_SETTINGS:
            self._failure = f"{child.spec.name} refused its settings (exit status 2)"
            _log.error("service_misconfigured", name=child.spec.name, exit_code=status)
            return
        if now - child.started_at >= self.settings.restart_reset_seconds:
            child.delay = self.settings.restart_min_seconds
        child.next_start = now + child.delay
        child.restarts += 1
        _log.warning(
            "service_exited", name=child.spec.name, pid=child.proc.pid if child.proc else None,
            exit_code=status, restart_in_s=round(child.delay, 3), restarts=child.restarts,
        )  # fmt: skip
        child.delay = min(child.delay * 2, self.settings.restart_max_seconds)

    def _stop_children(self) -> None:
        running = [c for c in self.children if c.running]
        for child in running:
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        self._forwarded = self._signals
        deadline = time.monotonic() + self.settings.stop_timeout_seconds
        while any(c.running for c in running) and time.monotonic() < deadline:
            if self._signals > self._forwarded:  # a further signal: pass it on (hurry)
                self._forwarded = self._signals
                for child in running:
                    if child.running and child.proc is not None:
                        with contextlib.suppress(ProcessLookupError):
                            child.proc.send_signal(signal.SIGTERM)
            time.sleep(_TICK_SECONDS)
        for child in self.children:
            killed = child.running
            child.kill_group()
            if child.proc is not None:
                child.proc.wait()
                if killed:
                    _log.warning("service_killed", name=child.spec.name, pid=child.proc.pid)
                else:
                    _log.info(
                        "service_stopped", name=child.spec.name, exit_code=child.proc.returncode
                    )

    # --- state file ----------------------------------------------------------------------------

    def state(self, status: str) -> dict[str, Any]:
        """What ``node.json`` holds: enough for ``mimrelay status`` and for tests."""
        return {
            "state": status,
            "pid": os.getpid(),
            "data_dir": str(self.data_dir),
            "stream_prefix": self.settings.stream_prefix,
            "api_url": self.api_url,
            "nats_url": redact_url(self.nats_url),
            "nats_monitor_url": self.nats.monitor_url if self.nats and self.nats.running else "",
            "nats_pid": self.nats.pid if self.nats else None,
            "database_url": redact_url(self.database_url),
            "postgres_pid": self.postgres.pid if self.postgres else None,
            "services": [
                {
                    "name": c.spec.name,
                    "service": c.spec.service,
                    "pid": c.proc.pid if c.proc else None,
                    "metrics_url": f"http://127.0.0.1:{c.spec.metrics_port}/metrics",
                    "health_url": f"http://127.0.0.1:{c.spec.metrics_port}/healthz",
                    "restarts": c.restarts,
                }
                for c in self.children
            ],
        }

    def _write_state(self, status: str) -> None:
        path = self.data_dir / STATE_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state(status), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        self._write_targets()
        if status == "running" and not getattr(self, "_announced", False):
            self._announced = True
            self._announce_endpoints()

    def _write_targets(self) -> None:
        """``prometheus-targets.json``: every metrics endpoint, for Prometheus' file discovery."""
        groups = [
            {
                "targets": [f"127.0.0.1:{c.spec.metrics_port}"],
                "labels": {"job": f"mim-{c.spec.service}", "replica": c.spec.name},
            }
            for c in self.children
        ]
        path = self.data_dir / TARGETS_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(groups, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    def _announce_endpoints(self) -> None:
        self._announce(f"mimrelay node up; data in {self.data_dir}")
        if self.api_url:
            self._announce(f"  API          {self.api_url}")
        for child in self.children:
            url = f"http://127.0.0.1:{child.spec.metrics_port}/metrics"
            self._announce(f"  {child.spec.name:<12} {url}")
        self._announce(f"  NATS         {redact_url(self.nats_url)}")
        self._announce(f"  PostgreSQL   {redact_url(self.database_url)}")
        self._announce(f"  state        {self.data_dir / STATE_FILE} (mimrelay status)")
        _log.info(
            "node_started", api_url=self.api_url, data_dir=str(self.data_dir),
            services={c.spec.name: c.spec.metrics_port for c in self.children},
        )  # fmt: skip


def read_state(data_dir: Path) -> dict[str, Any]:
    """The ``node.json`` of ``data_dir``; ``FileNotFoundError`` if no node ever ran there."""
    state: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
    return state
