"""The life of a service process: start, be ready, drain on SIGTERM, exit 0.

Every service's ``__main__`` is the same three lines::

    from relay.runner import run_service
    from services.validator.settings import ValidatorSettings
    from services.validator.worker import main

    if __name__ == "__main__":
        raise SystemExit(run_service("validator", ValidatorSettings, main))

``run_service`` reads the settings (a bad value: one line on stderr naming the variable, exit 2),
configures logging, and runs ``main(ctx)`` on a fresh event loop with SIGTERM and SIGINT handled by
``loop.add_signal_handler``. ``main`` opens its resources through the context, so they close in
reverse order at the end: ``await ctx.nats()``, ``await ctx.pool()`` (the primary, for writes),
``await ctx.read_pool()`` (``MIM_DATABASE_READ_URL``, a replica, for what only reads), or anything
pushed on ``ctx.stack``. It calls ``ctx.mark_ready()`` once its dependencies answer, then either
runs its loop until ``ctx.stop`` is set, or returns and leaves tracked tasks (``ctx.spawn``) or
subscriptions running; the runner then waits for the stop signal itself.

On SIGTERM (or SIGINT, or ``ctx.request_stop``) ``ctx.stop`` is set and ``/healthz`` turns 503.
``main`` and every task started with ``ctx.spawn`` get the service's ``shutdown_grace_seconds`` to
finish; what is still running after that is cancelled (unacked JetStream messages are redelivered),
and a second signal cuts the grace short. Then the exit stack unwinds (NATS drained, the pool
closed with ``terminate()`` as fallback), the metrics server stops, and
one ``shutdown_complete`` line sums up: ``reason``, ``exit_code``, ``cancelled``, ``uptime_s`` and
every counter the service added to ``ctx.counters`` (``handled=...``). A clean stop exits 0; an
exception escaping ``main`` or a tracked task (counted in ``mim_task_failures_total{task}``), or
``ctx.fail()``, exits 1.

Health: each service serves ``GET /healthz`` on its metrics port (``relay.metrics``): 200 once
``ctx.mark_ready()`` was called, while not stopping and while NATS and PostgreSQL (and the read
replica), when opened through the context, answer (``relay.health``); 503 with the reason
otherwise. The context's NATS client keeps reconnecting for as long as the service runs, so a lost
server makes the service unhealthy, not gone, and a server back on its address makes it healthy
again. A compose healthcheck needs no curl in the image::

    python -c "import sys, relay.runner as r; sys.exit(not r.probe('http://127.0.0.1:9102/healthz'))"
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any, Final, TypeVar, TypeVarTuple

import asyncpg
import structlog
import uvloop
from nats.aio.client import Client as NATS

from relay import SettingsError, memory
from relay import logging as relay_logging
from relay.connect import close_nats, close_pool, connect_nats, connect_pool
from relay.cpu import CpuPool
from relay.health import Check, DependencyWatch, nats_check, pool_check
from relay.metrics import (
    TASK_FAILURES,
    MetricsServer,
    set_build_info,
    start_metrics_server,
    version,
)
from relay.settings import ServiceSettings, load

__all__ = [
    "EXIT_BAD_SETTINGS",
    "EXIT_FAILED",
    "EXIT_OK",
    "Context",
    "Main",
    "health_url",
    "probe",
    "run_service",
    "sleep",
]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_S = TypeVar("_S", bound=ServiceSettings)
_P = TypeVar("_P", bound=CpuPool)

Main = Callable[["Context"], Awaitable[None]]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_SETTINGS: Final = 2
# After the grace period, how long cancelled tasks get to unwind, and how long closing the
# resources (NATS drain, pool close) may take beyond the grace period.
_CANCEL_WAIT_SECONDS: Final = 5.0
_CLOSE_EXTRA_SECONDS: Final = 10.0

_log = structlog.stdlib.get_logger("relay.runner")


# --- waiting --------------------------------------------------------------------------------


async def sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile; True if it was set."""
    if stop.is_set():
        return True
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def _keep_renewed(pool: asyncpg.Pool, stop: asyncio.Event, every: float, name: str) -> None:
    """Until ``stop``, every ``every`` seconds have each connection of ``pool`` replaced.

    A PostgreSQL backend keeps what it has cached and what its allocator holds after its largest
    query for as long as it lives. A connection in use finishes its work and is closed when it is
    released; one that is idle is replaced when it is next acquired, so nothing in flight is cut.
    """
    while not await sleep(stop, every):
        await pool.expire_connections()
        _log.info("pool_renewed", pool=name, connections=pool.get_size(), every_s=every)


# --- the service context --------------------------------------------------------------------


class Context:
    """What a service's ``main`` gets: settings, logger, stop event, resources, counters."""

    def __init__(self, name: str, settings: ServiceSettings) -> None:
        self.name = name
        self.settings = settings
        self.log: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(f"services.{name}")
        self.stop = asyncio.Event()
        self.stack = AsyncExitStack()
        self.counters: collections.Counter[str] = collections.Counter()
        self.metrics: MetricsServer | None = None
        self.stop_reason: str | None = None
        self.failure: str | None = None
        self._hurry = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ready = False
        self._unready_reason = "starting"
        self._problems: dict[str, str] = {}
        self.dependencies = DependencyWatch(self.log, settings.dependency_check_seconds)
        self._primary: asyncpg.Pool | None = None

    # readiness
    @property
    def ready(self) -> bool:
        return self._ready and not self.stop.is_set()

    def mark_ready(self) -> None:
        """Report ready on ``/healthz``: call once the service's dependencies answer."""
        was_ready, self._ready = self._ready, True
        if not was_ready:
            self.log.info("service_ready")

    def mark_not_ready(self, reason: str) -> None:
        """Report unavailable on ``/healthz`` with ``reason`` until ``mark_ready`` again."""
        self._unready_reason = reason
        was_ready, self._ready = self._ready, False
        if was_ready:
            self.log.warning("service_not_ready", reason=reason)

    def set_problem(self, name: str, detail: str | None) -> None:
        """Mark (``detail``) or clear (None) the problem ``name``; ``/healthz`` says 503 while any
        problem is marked, e.g. a background task that keeps failing."""
        if detail is None:
            if self._problems.pop(name, None) is not None:
                self.log.info("service_problem_cleared", problem=name)
            return
        if name not in self._problems:
            self.log.warning("service_problem", problem=name, detail=detail)
        self._problems[name] = detail

    def health(self) -> tuple[bool, dict[str, Any]]:
        """The ``/healthz`` answer; called from the metrics server's thread."""
        details: dict[str, Any] = {"service": self.name}
        if self.stop.is_set():
            return False, {**details, "reason": "stopping"}
        if not self._ready:
            return False, {**details, "reason": self._unready_reason}
        details.update(self.dependencies.details())
        problems = dict(self._problems)
        reasons = [*filter(None, [self.dependencies.problem()]), *problems.values()]
        if reasons:
            extra = {"problems": problems} if problems else {}
            return False, {**details, "reason": "; ".join(reasons), **extra}
        return True, details

    # stopping
    def request_stop(self, reason: str = "requested") -> None:
        """Start the graceful stop, as SIGTERM does."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop.set()

    def fail(self, reason: str) -> None:
        """Stop gracefully and exit 1."""
        if self.failure is None:
            self.failure = reason
            self.log.error("service_failing", reason=reason)
        self.request_stop("failed")

    async def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds``, or less if the stop is requested meanwhile; True if it was."""
        return await sleep(self.stop, seconds)

    async def until_stopped(self, awaitable: Awaitable[_T]) -> _T | None:
        """Await ``awaitable`` unless the stop is requested first (then cancel it, return None)."""
        work = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if work.done():
            return work.result()
        work.cancel()
        try:
            await work
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not just the work
        except Exception:  # noqa: S110 (the work was abandoned; its failure is moot)
            pass
        return None

    # tasks
    def spawn(
        self, coro: Coroutine[Any, Any, _T], *, name: str | None = None, kind: str | None = None
    ) -> asyncio.Task[_T]:
        """Start a tracked task: awaited (up to the grace period) on stop, never forgotten.

        An exception escaping it is logged, counted in ``mim_task_failures_total`` under ``kind``
        (default: ``name``; give one when names carry ids, so the label stays a small set) and
        stops the service with exit code 1.
        """
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, kind or name or "unnamed"))
        return task

    def _task_done(self, kind: str, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            TASK_FAILURES.labels(task=kind).inc()
            self.log.error("task_failed", task=task.get_name(), exc_info=exc)
            self.fail(f"task {task.get_name()} failed: {exc!r}")

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    # resources
    def _watch(self, name: str, check: Check) -> None:
        if self.dependencies.add(name, check):
            self.spawn(self.dependencies.run(self.stop), name="dependency-watch")

    async def nats(self) -> NATS:
        """A NATS connection from the settings, reconnecting until the service stops, then drained.

        While it is lost, ``/healthz`` answers 503 naming NATS.
        """

        async def closed() -> None:
            if not self.stop.is_set():
                self.fail("NATS connection closed")

        async def disconnected() -> None:
            if not self.stop.is_set():  # not the drain at the end
                self.dependencies.lost("nats", "connection lost, reconnecting")

        async def reconnected() -> None:
            self.dependencies.back("nats")

        client = await connect_nats(
            self.settings.nats_url,
            self.name,
            attempts=self.settings.connect_attempts,
            delay=self.settings.connect_retry_seconds,
            log=self.log,
            on_disconnect=disconnected,
            on_reconnect=reconnected,
            on_closed=closed,
            reconnect_forever=True,
        )
        self.stack.push_async_callback(close_nats, client, self._close_timeout)
        self._watch("nats", nats_check(client))
        return client

    async def pool(self, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
        """An asyncpg pool on the settings' database (the primary), closed when the service stops.

        While PostgreSQL does not answer through it, ``/healthz`` answers 503 naming PostgreSQL.
        """
        pool = await self._open_pool(
            self.settings.database_url, "postgres", min_size, max_size, kwargs
        )
        if self._primary is None:
            self._primary = pool
        return pool

    async def read_pool(
        self, *, min_size: int = 1, max_size: int = 10, **kwargs: Any
    ) -> asyncpg.Pool:
        """A pool for what only reads: on ``MIM_DATABASE_READ_URL`` (a streaming replica) when it
        is set, watched as ``postgres-read`` on ``/healthz``; else the primary's pool, the one
        ``pool()`` opened (or a new one on the primary if none was).

        What is read here may lag the primary by the replica's delay: read your own writes from
        ``pool()``.
        """
        url = self.settings.database_read_url
        if not url or url == self.settings.database_url:
            if self._primary is not None:
                return self._primary
            return await self.pool(min_size=min_size, max_size=max_size, **kwargs)
        return await self._open_pool(url, "postgres-read", min_size, max_size, kwargs)

    async def _open_pool(
        self, url: str, name: str, min_size: int, max_size: int, kwargs: dict[str, Any]
    ) -> asyncpg.Pool:
        # the server shows who is connected: pg_stat_activity.application_name
        kwargs.setdefault("server_settings", {"application_name": f"mimrelay-{self.name}"})
        pool = await connect_pool(
            url,
            attempts=self.settings.connect_attempts,
            delay=self.settings.connect_retry_seconds,
            min_size=min_size,
            max_size=max_size,
            log=self.log,
            **kwargs,
        )
        self.stack.push_async_callback(close_pool, pool, self._close_timeout)
        self._watch(name, pool_check(pool))
        lifetime = self.settings.database_connection_lifetime_seconds
        if lifetime > 0:
            self.spawn(_keep_renewed(pool, self.stop, lifetime, name), name=f"{name}-renew")
        return pool

    def processes(self, pool: _P) -> _P:
        """``pool``, its workers stopped when the service stops (within the shutdown grace)."""
        self.stack.push_async_callback(pool.aclose, self._close_timeout)
        return pool

    @property
    def _close_timeout(self) -> float:
        return max(1.0, self.settings.shutdown_grace_seconds)

    async def aclose(self, reason: str = "closed") -> int:
        """Stop as SIGTERM would, then close every resource; how many tasks were cancelled.

        For running a service's parts inside another program (a test), where no runner does it.
        """
        self.request_stop(reason)
        cancelled = await _drain(self)
        await _close_resources(self)
        return cancelled


# --- running a service ----------------------------------------------------------------------


def run_service(name: str, settings: _S | type[_S], main: Main) -> int:
    """Run service ``name`` until stopped; returns the process exit code (0 on a clean stop).

    ``settings`` is a settings object or a class to load from the environment.
    """
    if isinstance(settings, type):
        try:
            settings = load(settings)
        except SettingsError as exc:
            sys.stderr.write(f"mimrelay {name}: {exc}\n")
            return EXIT_BAD_SETTINGS
    relay_logging.configure(name, settings)
    # uvloop: the gateway serves its cached pages about twice as fast on it as on asyncio's loop
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve(name, settings, main))


async def _serve(name: str, settings: ServiceSettings, main: Main) -> int:
    loop = asyncio.get_running_loop()
    ctx = Context(name, settings)
    started = time.monotonic()
    signals = 0

    def on_signal(signum: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            ctx.request_stop(signum.name)
        else:
            _log.warning("shutdown_hurried", signal=signum.name)
            ctx._hurry.set()

    try:
        ctx.metrics = start_metrics_server(
            settings.metrics_host, settings.metrics_port, health=ctx.health
        )
    except OSError as exc:
        _log.error(
            "service_failed",
            reason="cannot serve metrics",
            host=settings.metrics_host,
            port=settings.metrics_port,
            error=str(exc),
        )
        return EXIT_FAILED
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        set_build_info(name)
        _log.info(
            "service_started",
            pid=os.getpid(),
            version=version(),
            loop=type(loop).__module__.partition(".")[0],
            metrics_url=ctx.metrics.url,
            shutdown_grace_s=settings.shutdown_grace_seconds,
        )
        cancelled = await _run_until_stopped(ctx, main)
        await _close_resources(ctx)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if ctx.metrics is not None:
            await asyncio.to_thread(ctx.metrics.stop)
    exit_code = EXIT_FAILED if ctx.failure else EXIT_OK
    _log.info(
        "shutdown_complete",
        reason=ctx.stop_reason,
        exit_code=exit_code,
        cancelled=cancelled,
        uptime_s=round(time.monotonic() - started, 3),
        **dict(ctx.counters),
    )
    return exit_code


async def _run_until_stopped(ctx: Context, main: Main) -> int:
    """Run ``main`` and wait for the stop; drain; return how many tasks were cancelled."""
    ctx.spawn(_call_main(ctx, main), name=f"{ctx.name}-main")
    every = ctx.settings.memory_trim_seconds
    if every > 0 and memory.supported():
        ctx.spawn(memory.keep_trimmed(ctx.stop, every), name="memory-trim")
    await ctx.stop.wait()
    grace = ctx.settings.shutdown_grace_seconds
    _log.info("shutdown_started", reason=ctx.stop_reason, grace_s=grace, in_flight=len(ctx.tasks))
    return await _drain(ctx)


async def _drain(ctx: Context) -> int:
    """Give the tracked tasks the grace period, cancel what is left; how many were cancelled."""
    pending = await _wait_tasks(ctx, ctx.settings.shutdown_grace_seconds)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=_CANCEL_WAIT_SECONDS)
    return len(pending)


async def _call_main(ctx: Context, main: Main) -> None:
    try:
        await main(ctx)
    except Exception as exc:
        _log.error("service_failed", exc_info=exc)
        ctx.fail(f"main failed: {exc!r}")


async def _wait_tasks(ctx: Context, grace: float) -> set[asyncio.Task[Any]]:
    """Wait for the tracked tasks up to ``grace`` seconds (less after a second signal)."""
    deadline = time.monotonic() + grace
    while True:
        pending = set(ctx.tasks)
        remaining = deadline - time.monotonic()
        if not pending or remaining <= 0 or ctx._hurry.is_set():
            return pending
        hurry = asyncio.ensure_future(ctx._hurry.wait())
        try:
            await asyncio.wait(
                {*pending, hurry}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            hurry.cancel()


async def _close_resources(ctx: Context) -> None:
    limit = ctx.settings.shutdown_grace_seconds + _CLOSE_EXTRA_SECONDS
    try:
        await asyncio.wait_for(ctx.stack.aclose(), limit)
    except TimeoutError:
        _log.warning("shutdown_close_timeout", timeout_s=limit)
    except Exception as exc:
        _log.error("shutdown_close_failed", exc_info=exc)
        ctx.failure = ctx.failure or f"closing resources failed: {exc!r}"


# --- health probes --------------------------------------------------------------------------


def health_url(settings: ServiceSettings, host: str = "127.0.0.1") -> str:
    """Where the service configured by ``settings`` answers ``/healthz``."""
    return f"http://{host}:{settings.metrics_port}/healthz"


def probe(url: str, timeout: float = 2.0) -> bool:
    """True if ``url`` (a ``/healthz`` endpoint) answers 200 within ``timeout``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http URL we build)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False
