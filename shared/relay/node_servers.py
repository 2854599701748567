"""The embedded nats-server and PostgreSQL of a ``mimrelay up`` node, kept running.

Contract:

- ``start()`` starts nats-server (JetStream store in ``<data_dir>/nats``) and PostgreSQL (cluster
  in ``<data_dir>/postgres``) through ``relay.embedded``, unless ``MIM_NATS_URL`` /
  ``MIM_DATABASE_URL`` name servers of their own: those are ``external``, recorded, not watched.
- ``poll()``, on every tick of the supervisor, notices an embedded server that exited
  (``server_exited``: ``server``, ``pid``, ``exit_code``, ``restart_in_s``, ``restarts``) and
  starts it again after the pause of its :class:`relay.restarts.Backoff`, on the same data
  directory and the same ports, so the services reconnect to the URLs they have; JetStream and
  PostgreSQL recover their own data (``server_restarted``: ``server``, ``pid``, ``down_s``). A
  start that fails is logged (``server_restart_failed``) and waited out the same way.
- A server that fails ``failures_max`` times in a row (it exits, or does not start, without
  having run for the backoff's reset time) sets ``failure``, naming the server and its log, and
  is not started again: the supervisor then stops the node.
- ``stop()`` stops the embedded servers still running, nats-server first.
- ``state()`` gives each server's entry in ``node.json``: ``state`` (``running``,
  ``restarting``, ``failed``, ``stopped`` or ``external``), ``pid``, ``url``, ``restarts``,
  ``last_exit``, ``down_since`` (Unix time, while not running) and ``log``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay import ServerError
from relay.embedded import NatsServer, PostgresServer
from relay.logging import get_logger
from relay.restarts import Backoff
from relay.settings import redact_url

__all__ = ["KeptServer", "NodeServers"]

_log = get_logger("relay.node")


@dataclass(slots=True)
class KeptServer:
    """One server of the node and what the supervisor knows of it."""

    name: str  # "nats" or "postgres"
    server: NatsServer | PostgresServer | None  # None: an external server
    url: str
    backoff: Backoff
    state: str = "running"
    restarts: int = 0
    started_at: float = 0.0  # monotonic
    next_start: float = 0.0  # monotonic, while restarting
    last_exit: int | None = None
    down_since: float | None = None  # Unix time

    @property
    def what(self) -> str:
        """How the logs and messages name it: ``nats-server`` or ``postgres``."""
        return self.server.log_path.stem if self.server is not None else self.name

    def entry(self) -> dict[str, Any]:
        """Its entry in ``node.json``."""
        server = self.server
        return {
            "state": self.state,
            "pid": server.pid if server is not None and server.running else None,
            "url": redact_url(self.url),
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "down_since": self.down_since,
            "log": str(server.log_path) if server is not None else "",
        }


def _started(name: str, server: NatsServer | PostgresServer, backoff: Backoff) -> KeptServer:
    url = server.url if isinstance(server, NatsServer) else server.dsn
    _log.info(f"{name}_started", url=redact_url(url), pid=server.pid)
    return KeptServer(name, server, url, backoff, started_at=time.monotonic())


class NodeServers:
    """The node's two servers; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        new_backoff: Callable[[], Backoff],
        *,
        failures_max: int,
        stop_seconds: float,
        nats_profile_port: int = 0,
        nats_memory_limit: int = 0,
    ) -> None:
        self.data_dir = data_dir
        self.nats_profile_port = nats_profile_port
        self.nats_memory_limit = nats_memory_limit
        self.failures_max = failures_max
        self.stop_seconds = stop_seconds
        self.nats: KeptServer | None = None
        self.postgres: KeptServer | None = None
        self.failure: str | None = None
        self._new_backoff = new_backoff

    def start(self, nats_url: str = "", database_url: str = "") -> None:
        """Start the embedded servers; a given URL names an external server instead."""
        if nats_url:
            self.nats = KeptServer("nats", None, nats_url, self._new_backoff(), "external")
        else:
            nats = NatsServer(
                self.data_dir / "nats",
                profile_port=self.nats_profile_port,
                memory_limit=self.nats_memory_limit,
            ).start()
            self.nats = _started("nats", nats, self._new_backoff())
        if database_url:
            self.postgres = KeptServer(
                "postgres", None, database_url, self._new_backoff(), "external"
            )
        else:
            postgres = PostgresServer(self.data_dir / "postgres").start()
            self.postgres = _started("postgres", postgres, self._new_backoff())

    @property
    def nats_url(self) -> str:
        return self.nats.url if self.nats is not None else ""

    @property
    def database_url(self) -> str:
        return self.postgres.url if self.postgres is not None else ""

    @property
    def nats_monitor_url(self) -> str:
        server = self.nats.server if self.nats is not None else None
        return server.monitor_url if isinstance(server, NatsServer) and server.running else ""

    @property
    def nats_profile_url(self) -> str:
        server = self.nats.server if self.nats is not None else None
        return server.profile_url if isinstance(server, NatsServer) and server.running else ""

    def _kept(self) -> Iterator[KeptServer]:
        yield from (k for k in (self.nats, self.postgres) if k is not None)

    def poll(self) -> bool:
        """Notice exits and start again what is due; True if anything changed."""
        changed = False
        for kept in self._kept():
            if self.failure is not None or kept.server is None:
                continue
            if kept.state == "running" and not kept.server.running:
                self._exited(kept, kept.server)
                changed = True
            elif kept.state == "restarting" and time.monotonic() >= kept.next_start:
                self._restart(kept, kept.server)
                changed = True
        return changed

    def _exited(self, kept: KeptServer, server: NatsServer | PostgresServer) -> None:
        pid = server.pid
        kept.last_exit = server.reap()
        kept.down_since = time.time()
        ran_for = time.monotonic() - kept.started_at
        self._wait_out(kept, ran_for, "server_exited", pid=pid, exit_code=kept.last_exit)

    def _restart(self, kept: KeptServer, server: NatsServer | PostgresServer) -> None:
        try:
            server.restart()
        except ServerError as exc:
            self._wait_out(kept, 0.0, "server_restart_failed", error=str(exc))
            return
        kept.state = "running"
        kept.started_at = time.monotonic()
        down_s = round(time.time() - (kept.down_since or time.time()), 3)
        kept.down_since = None
        _log.info(
            "server_restarted", server=kept.what, pid=server.pid, url=redact_url(kept.url),
            down_s=down_s, restarts=kept.restarts,
        )  # fmt: skip

    def _wait_out(self, kept: KeptServer, ran_for: float, event: str, **fields: Any) -> None:
        """Schedule the next start after an exit or a failed start, or give up on the server."""
        pause = kept.backoff.exited(ran_for)
        failures = kept.backoff.in_a_row
        if failures >= self.failures_max:
            kept.state = "failed"
            log = kept.server.log_path if kept.server is not None else ""
            self.failure = (
                f"{kept.what} keeps failing: it exited or did not start {failures} times in a "
                f"row; see {log}"
            )
            _log.error("server_failing", server=kept.what, failures=failures, **fields)
            return
        kept.state = "restarting"
        kept.next_start = time.monotonic() + pause
        kept.restarts += 1
        _log.warning(
            event, server=kept.what, restart_in_s=round(pause, 3), restarts=kept.restarts, **fields
        )

    def stop(self) -> None:
        """Stop the embedded servers still running (nats-server, then PostgreSQL)."""
        for kept in self._kept():
            server = kept.server
            if server is None:
                continue
            if server.running:
                pid = server.pid
                status = server.stop(self.stop_seconds)
                _log.info("server_stopped", server=kept.what, pid=pid, status=status)
            if kept.state != "failed":
                kept.state = "stopped"

    def state(self) -> dict[str, Any]:
        """``{"nats": {...}, "postgres": {...}}`` for ``node.json``."""
        return {kept.name: kept.entry() for kept in self._kept()}
