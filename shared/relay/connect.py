"""Reaching NATS and PostgreSQL: bounded retries while they are not up yet, each try logged.

``connect_nats`` and ``connect_pool`` try ``attempts`` times ``delay`` apart and raise
``DependencyUnavailable`` when the server never answers (a refusal that waiting will not cure, a
bad password or a missing database, fails at once); ``close_nats`` drains and ``close_pool`` closes,
each within a wait, with a hard close as fallback. The runner's context uses them for a service's
resources; the command line and ``mimrelay up`` use them directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Final

import asyncpg
import nats
import nats.errors
import structlog
from nats.aio.client import Client as NATS

from relay import DependencyUnavailable
from relay.settings import redact_url

__all__ = ["close_nats", "close_pool", "connect_nats", "connect_pool", "servers"]

_log = structlog.stdlib.get_logger("relay.connect")

_PG_TRANSIENT: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def servers(url: str) -> list[str]:
    """The server URLs of ``MIM_NATS_URL``: one, or a cluster's comma-separated."""
    return [part.strip() for part in url.split(",") if part.strip()]


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
    reconnect_forever: bool = False,
) -> NATS:
    """Connect to NATS, trying ``attempts`` times ``delay`` apart, logging each failed try.

    ``url`` may name several servers of one cluster, comma-separated; the client connects to any
    that answers, learns the others from it, and moves to another when its server goes away.
    Once connected the client reconnects on its own, ``delay`` apart, with the same budget (or for
    as long as it lives, with ``reconnect_forever``); when that is spent the connection closes and
    ``on_closed`` runs. Of the failed tries of one reconnection only the first is logged.
    Raises ``DependencyUnavailable``.
    """
    logger = log or _log
    shown = redact_url(url)
    tries = 0
    failed_reconnects = 0
    connected = False

    async def error_cb(exc: Exception) -> None:
        nonlocal tries, failed_reconnects
        if connected:
            failed_reconnects += client.is_reconnecting
            say = logger.warning if failed_reconnects <= 1 else logger.debug
            say("nats_error", error=repr(exc))
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
        nonlocal failed_reconnects
        logger.info("nats_reconnected", url=shown, failed_attempts=failed_reconnects)
        failed_reconnects = 0
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
            servers(url),
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
    if reconnect_forever:
        client.options["max_reconnect_attempts"] = -1  # read at each try; negative: no limit
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


def _suppress_all() -> contextlib.suppress:
    """Suppress any error (not cancellation) while cleaning up after another one."""
    return contextlib.suppress(Exception)
