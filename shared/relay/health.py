"""Whether the servers a service depends on answer now, so that its ``/healthz`` tells the truth.

A service on the shared runner opens NATS with ``ctx.nats()`` and PostgreSQL with ``ctx.pool()``;
each registers a check here, and from then on:

- NATS is down from the moment its client loses the connection until it is connected again. The
  runner's client keeps reconnecting for as long as the service runs (``mimrelay up`` restarts a
  dead nats-server on the same port), so the service is never restarted for it.
- PostgreSQL is down while a check through the service's own pool fails: every
  ``MIM_DEPENDENCY_CHECK_SECONDS`` a connection is taken and asked ``SELECT 1``, each within
  :data:`CHECK_TIMEOUT_SECONDS`. The pool replaces broken connections by itself, so the same
  check sees PostgreSQL come back. A pool whose every connection is at work is not asked: its
  connections are in use, which is answer enough.
- While anything is down, ``/healthz`` answers 503 with the reason, for example
  ``postgres unreachable: ConnectionRefusedError: ...``; once everything is back, 200 again.
- Each change is one log line, ``dependency_lost`` (``dependency``, ``reason``) or
  ``dependency_back`` (``dependency``, ``down_s``), and sets ``mim_dependency_up{dependency}``.
  A check that raises something unforeseen is logged (``dependency_check_failed``) and counts as
  a failed one: a health check never ends the service.

The state is read by the metrics server's thread while the event loop changes it, so it is never
changed in place: each change replaces the mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import asyncpg
import structlog
from nats.aio.client import Client as NATS

from relay.metrics import DEPENDENCY_UP

__all__ = [
    "CHECK_TIMEOUT_SECONDS",
    "DATABASE_FAILURES",
    "Check",
    "DependencyWatch",
    "nats_check",
    "pool_check",
]

Check = Callable[[], Awaitable[str | None]]
"""Asks one dependency once: ``None`` when it answers, else why it does not."""

#: How long one check may take before its dependency counts as unreachable.
CHECK_TIMEOUT_SECONDS: Final = 2.0

# What a connection does when the server goes away under it: refused or reset sockets, closed
# connections, and a protocol caught mid-operation by the lost connection.
DATABASE_FAILURES: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


def nats_check(client: NATS) -> Check:
    """Whether ``client`` is connected (it notices a lost server at once, and keeps retrying)."""

    async def check() -> str | None:
        return None if client.is_connected else "connection lost, reconnecting"

    return check


def pool_check(pool: asyncpg.Pool) -> Check:
    """Whether a connection of ``pool`` answers ``SELECT 1`` (the pool reconnects on its own)."""

    async def check() -> str | None:
        if pool.get_idle_size() == 0 and pool.get_size() >= pool.get_max_size():
            return None  # every connection is at work
        try:
            async with pool.acquire(timeout=CHECK_TIMEOUT_SECONDS) as conn:
                await conn.fetchval("SELECT 1", timeout=CHECK_TIMEOUT_SECONDS)
        except DATABASE_FAILURES as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    return check


class DependencyWatch:
    """The dependencies of one service and which of them are down; see the module docstring."""

    def __init__(self, log: structlog.stdlib.BoundLogger, interval: float) -> None:
        self.interval = interval
        self._log = log
        self._checks: Mapping[str, list[Check]] = {}
        self._down: Mapping[str, tuple[str, float]] = {}  # name -> (reason, since)

    def add(self, name: str, check: Check) -> bool:
        """Watch ``name`` with ``check`` too; True for the first check (time to start ``run``)."""
        first = not self._checks
        self._checks = {**self._checks, name: [*self._checks.get(name, []), check]}
        DEPENDENCY_UP.labels(name).set(0 if name in self._down else 1)
        return first

    def lost(self, name: str, reason: str) -> None:
        """Count ``name`` as down for ``reason`` (a later reason replaces it, not the time)."""
        known = self._down.get(name)
        if known is not None and known[0] == reason:
            return
        since = known[1] if known is not None else time.monotonic()
        self._down = {**self._down, name: (reason, since)}
        DEPENDENCY_UP.labels(name).set(0)
        if known is None:
            self._log.warning("dependency_lost", dependency=name, reason=reason)

    def back(self, name: str) -> None:
        """Count ``name`` as answering again."""
        known = self._down.get(name)
        if known is None:
            return
        self._down = {k: v for k, v in self._down.items() if k != name}
        DEPENDENCY_UP.labels(name).set(1)
        down_s = round(time.monotonic() - known[1], 3)
        self._log.info("dependency_back", dependency=name, down_s=down_s)

    def problem(self) -> str | None:
        """Why the service cannot work now (what is down and why), or None."""
        down = self._down
        if not down:
            return None
        return "; ".join(f"{name} unreachable: {reason}" for name, (reason, _) in down.items())

    def details(self) -> dict[str, Any]:
        """``{"dependencies": {name: "up" or "unreachable: <reason>"}}`` for ``/healthz``."""
        down = self._down
        states = {
            name: f"unreachable: {down[name][0]}" if name in down else "up" for name in self._checks
        }
        return {"dependencies": states} if states else {}

    async def check_once(self) -> None:
        """Run every check and record what it says."""
        for name, checks in self._checks.items():
            reasons = [await self._ask(check) for check in checks]
            reason = next((r for r in reasons if r is not None), None)
            if reason is None:
                self.back(name)
            else:
                self.lost(name, reason)

    async def run(self, stop: asyncio.Event) -> None:
        """Check every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            await self.check_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    async def _ask(self, check: Check) -> str | None:
        try:
            return await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS * 2)
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_SECONDS * 2:g}s"
        except Exception as exc:  # a check that cannot tell counts as a failed one, not a crash
            self._log.error("dependency_check_failed", exc_info=exc)
            return f"check failed: {exc!r}"
