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
reverse order at the end: ``await ctx.nats()``, ``await ctx.pool()``, or anything pushed on
``ctx.stack``. It calls ``ctx.mark_ready()`` once its dependencies answer, then either runs its loop
until ``ctx.stop`` is set, or returns and leaves tracked tasks (``ctx.spawn``) or subscriptions
running; the runner then waits for the stop signal itself.

On SIGTERM (or SIGINT, or ``ctx.request_stop``) ``ctx.stop`` is set and ``/healthz`` turns 503.
``main`` and every task started with ``ctx.spawn`` get the service's ``shutdown_grace_seconds`` to
finish; what is still running after that is cancelled (unacked JetStream messages are redelivered),
and a second signal cuts the grace short. Then the exit stack unwinds (NATS drained, the pool
closed with ``terminate()`` as fallback), the metrics server stops, and
one ``shutdown_complete`` line sums up: ``reason``, ``exit_code``, ``cancelled``, ``uptime_s`` and
every counter the service added to ``ctx.counters`` (``handled=...``). A clean stop exits 0; an
exception escaping ``main`` or a tracked task, or ``ctx.fail()``, exits 1.

Health: each service serves ``GET /healthz`` on its metrics port (``relay.metrics``): 200 once
``ctx.mark_ready()`` was called and while not stopping, 503 otherwise. A compose healthcheck
needs no curl in the image::

    python -c "import sys, relay.runner as r; sys.exit(not r.probe('http://127.0.0.1:9102/healthz'))"
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import Any, Final, TypeVar, TypeVarTuple

import asyncpg
import nats
import nats.errors
import structlog
from nats.aio.client import Client as NATS

from relay import DependencyUnavailable, SettingsError
from relay import logging as relay_logging
from relay.metrics import MetricsServer, set_build_info, start_metrics_server, version
from relay.settings import ServiceSettings, load, redact_url

__all__ = [
    "EXIT_BAD_SETTINGS",
    "EXIT_FAILED",
    "EXIT_OK",
    "PARENT_WATCH_SECONDS",
    "Context",
    "CpuPool",
    "Main",
    "close_nats",
    "close_pool",
    "connect_nats",
    "connect_pool",
    "health_url",
    "pool_worker_init",
    "probe",
    "run_service",
    "sleep",
]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_S = TypeVar("_S", bound=ServiceSettings)
_P = TypeVar("_P", bound="CpuPool")

Main = Callable[["Context"], Awaitable[None]]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_SETTINGS: Final = 2
# After the grace period, how long cancelled tasks get to unwind, and how long closing the
# resources (NATS drain, pool close) may take beyond the grace period.
_CANCEL_WAIT_SECONDS: Final = 5.0
_CLOSE_EXTRA_SECONDS: Final = 10.0

_log = structlog.stdlib.get_logger("relay.runner")

_PG_TRANSIENT: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


# --- dependencies ---------------------------------------------------------------------------


def _tries(count: int) -> str:
    return "1 attempt" if count == 1 else f"{count} attempts"


async def connect_nats(
    url: str,
    name: str,
    *,
    attempts: int = 30,
    delay: float = 1.0,
    connect_timeout: float = 2.0,
    log: structlog.stdlib.BoundLogger | None = None,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
    on_closed: Callable[[], Awaitable[None]] | None = None,
) -> NATS:
    """Connect to NATS, trying ``attempts`` times ``delay`` apart, logging each failed try.

    Once connected the client reconnects on its own with the same budget; when that is spent the
    connection closes and ``on_closed`` runs. Raises ``DependencyUnavailable``.
    """
    logger = log or _log
    shown = redact_url(url)
    tries = 0
    connected = False

    async def error_cb(exc: Exception) -> None:
        nonlocal tries
        if connected:
            logger.warning("nats_error", error=repr(exc))
            return
        tries += 1
        logger.info(
            "dependency_wait",
            dependency="nats",
            url=shown,
            attempt=tries,
            attempts=attempts,
            error=repr(exc),
        )

    async def disconnected_cb() -> None:
        if connected and not client.is_closed:  # closed: we closed it, nothing was lost
            logger.warning("nats_disconnected", url=shown)
            if on_disconnect is not None:
                await on_disconnect()

    async def reconnected_cb() -> None:
        logger.info("nats_reconnected", url=shown)
        if on_reconnect is not None:
            await on_reconnect()

    async def closed_cb() -> None:
        if connected and on_closed is not None:
            await on_closed()

    client = NATS()
    # nats-py tries a server again until its failed tries exceed this, and takes 0 as "for ever";
    # a fraction makes the first failure the last
    retries = attempts - 1 if attempts > 1 else 0.5
    try:
        await client.connect(
            url,
            name=name,
            connect_timeout=max(1, round(connect_timeout)),
            reconnect_time_wait=delay,  # type: ignore[arg-type]  # seconds, a float works
            max_reconnect_attempts=retries,  # type: ignore[arg-type]  # compared, a float works
            error_cb=error_cb,
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
            closed_cb=closed_cb,
        )
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        with _suppress_all():
            await client.close()
        raise DependencyUnavailable(
            f"NATS at {shown} did not answer after {_tries(max(tries, 1))}: {exc!r}"
        ) from exc
    connected = True
    logger.info("dependency_ready", dependency="nats", url=shown, attempts=tries + 1)
    return client


async def close_nats(client: NATS, wait_seconds: float = 10.0) -> None:
    """Drain ``client`` (subscriptions finish, pending publishes flush); close it after a wait."""
    if client.is_closed:
        return
    try:
        await asyncio.wait_for(client.drain(), wait_seconds)
    except (TimeoutError, nats.errors.Error):
        with _suppress_all():
            await client.close()


async def connect_pool(
    dsn: str,
    *,
    attempts: int = 30,
    delay: float = 1.0,
    min_size: int = 1,
    max_size: int = 10,
    log: structlog.stdlib.BoundLogger | None = None,
    **kwargs: Any,
) -> asyncpg.Pool:
    """An asyncpg pool, trying ``attempts`` times ``delay`` apart while PostgreSQL is not up.

    Refusals that waiting will not cure (bad password, missing database) fail at once. Raises
    ``DependencyUnavailable``.
    """
    logger = log or _log
    shown = redact_url(dsn)
    for attempt in range(1, attempts + 1):
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, **kwargs
            )
        except _PG_TRANSIENT as exc:
            logger.info(
                "dependency_wait",
                dependency="postgres",
                url=shown,
                attempt=attempt,
                attempts=attempts,
                error=repr(exc),
            )
            if attempt == attempts:
                raise DependencyUnavailable(
                    f"PostgreSQL at {shown} did not answer after {_tries(attempts)}: {exc!r}"
                ) from exc
            await asyncio.sleep(delay)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DependencyUnavailable(f"PostgreSQL at {shown} refused us: {exc!r}") from exc
        else:
            logger.info("dependency_ready", dependency="postgres", url=shown, attempts=attempt)
            return pool
    raise AssertionError("unreachable")  # pragma: no cover


async def close_pool(pool: asyncpg.Pool, wait_seconds: float = 10.0) -> None:
    """Close ``pool`` gracefully, or terminate its connections after ``wait_seconds``."""
    try:
        await asyncio.wait_for(pool.close(), wait_seconds)
    except TimeoutError:
        pool.terminate()


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


# --- CPU-bound work -------------------------------------------------------------------------


#: How often a pool worker checks that the process that started it is still there.
PARENT_WATCH_SECONDS: Final = 0.2


def pool_worker_init(parent: int) -> None:
    """Initializer of every worker process: ignore SIGINT, and exit once ``parent`` is gone.

    A worker blocks on a queue whose both ends it holds, so it would never notice its service being
    killed with -9 and would linger, holding the service's stdout; the watchdog thread ends it
    within ``PARENT_WATCH_SECONDS`` instead.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_WATCH_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class CpuPool:
    """A bounded process pool for CPU-bound work (PoW minting).

    Workers are started with ``spawn`` (never forked from a process running threads and an event
    loop), ignore SIGINT so Ctrl-C reaches only the service, and exit by themselves when the
    service is gone (:func:`pool_worker_init`). At most ``max_pending`` calls are submitted at
    once; further callers wait their turn. ``fn`` and its arguments must pickle.
    """

    def __init__(self, workers: int = 0, *, max_pending: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.max_pending = max_pending or 2 * self.workers
        self._slots = asyncio.Semaphore(self.max_pending)
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None

    def _ensure(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=pool_worker_init,
                initargs=(os.getpid(),),
            )
        return self._executor

    async def run(self, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        """Run ``fn(*args)`` in a worker process and return its result."""
        async with self._slots:
            future = self._ensure().submit(fn, *args)
            return await asyncio.wrap_future(future)

    async def warm(self, fn: Callable[[*_Ts], object], *args: *_Ts) -> None:
        """Start every worker now by running ``fn(*args)`` once per worker, all at once.

        The executor starts a worker per call while none is idle, so ``workers`` concurrent calls
        start them all; ``fn`` should take a moment (and import what the real work needs), so
        one worker does not take every call. Otherwise the first real batch pays for starting
        interpreters and importing modules.
        """
        await asyncio.gather(*(self.run(fn, *args) for _ in range(self.workers)))

    async def aclose(self, wait_seconds: float = 5.0) -> None:
        """Cancel queued calls, let running ones finish for ``wait_seconds``, then kill workers."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # The executor has no public way to stop a running call; kill stuck workers directly.
        processes = list(getattr(executor, "_processes", {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + wait_seconds

        def join() -> None:
            for process in processes:
                process.join(max(0.0, deadline - time.monotonic()))
            for process in processes:
                if process.is_alive():
                    process.kill()
                    process.join()
            executor.shutdown(wait=True)

        await asyncio.to_thread(join)


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
        problems = dict(self._problems)
        if problems:
            return False, {**details, "reason": "; ".join(problems.values()), "problems": problems}
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
    def spawn(self, coro: Coroutine[Any, Any, _T], *, name: str | None = None) -> asyncio.Task[_T]:
        """Start a tracked task: awaited (up to the grace period) on stop, never forgotten.

        An exception escaping it is logged and stops the service with exit code 1.
        """
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.log.error("task_failed", task=task.get_name(), exc_info=exc)
            self.fail(f"task {task.get_name()} failed: {exc!r}")

    @property
    def tasks(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    # resources
    async def nats(self) -> NATS:
        """A NATS connection from the settings, drained when the service stops."""

        async def closed() -> None:
            if not self.stop.is_set():
                self.fail("NATS connection closed")

        async def disconnected() -> None:
            self.mark_not_ready("nats disconnected")

        async def reconnected() -> None:
            self.mark_ready()

        client = await connect_nats(
            self.settings.nats_url,
            self.name,
            attempts=self.settings.connect_attempts,
            delay=self.settings.connect_retry_seconds,
            log=self.log,
            on_disconnect=disconnected,
            on_reconnect=reconnected,
            on_closed=closed,
        )
        self.stack.push_async_callback(close_nats, client, self._close_timeout)
        return client

    async def pool(self, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> asyncpg.Pool:
        """An asyncpg pool on the settings' database, closed when the service stops."""
        pool = await connect_pool(
            self.settings.database_url,
            attempts=self.settings.connect_attempts,
            delay=self.settings.connect_retry_seconds,
            min_size=min_size,
            max_size=max_size,
            log=self.log,
            **kwargs,
        )
        self.stack.push_async_callback(close_pool, pool, self._close_timeout)
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
    return asyncio.run(_serve(name, settings, main))


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


def _suppress_all() -> contextlib.suppress:
    """Suppress any error (not cancellation) while cleaning up after another one."""
    return contextlib.suppress(Exception)
