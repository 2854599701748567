"""relay.health: a dependency watch says what is down, why and since when, on real servers."""

from __future__ import annotations

import asyncio

import asyncpg
import nats
import structlog
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from relay.embedded import NatsServer, PostgresServer
from relay.health import DependencyWatch, nats_check, pool_check

_LOG = structlog.stdlib.get_logger("test")


def _up(dependency: str) -> float | None:
    return REGISTRY.get_sample_value("mim_dependency_up", {"dependency": dependency})


async def test_postgres_down_and_back_through_the_pool(
    dedicated_postgres_server: PostgresServer,
) -> None:
    """A killed PostgreSQL is reported down with the pool's error, logged once, and back (with
    how long it was down) once the same pool reaches the restarted server."""
    pool = await asyncpg.create_pool(dedicated_postgres_server.dsn, min_size=1, max_size=2)
    watch = DependencyWatch(_LOG, interval=0.1)
    assert watch.add("postgres", pool_check(pool))
    try:
        with capture_logs() as logs:
            await watch.check_once()
            assert watch.problem() is None
            assert watch.details() == {"dependencies": {"postgres": "up"}}
            await asyncio.to_thread(dedicated_postgres_server.kill)
            await watch.check_once()
            await watch.check_once()
            problem = watch.problem()
            assert problem is not None and problem.startswith("postgres unreachable: ")
            assert _up("postgres") == 0.0
            await asyncio.to_thread(dedicated_postgres_server.restart)
            await watch.check_once()
        assert watch.problem() is None
        assert _up("postgres") == 1.0
        events = [(e["event"], e.get("dependency")) for e in logs]
        assert events == [("dependency_lost", "postgres"), ("dependency_back", "postgres")]
        assert logs[1]["down_s"] > 0
    finally:
        pool.terminate()


async def test_a_pool_with_every_connection_at_work_counts_as_answering(
    dedicated_postgres_server: PostgresServer,
) -> None:
    """While every connection of the pool is in use the check does not queue for one: the
    service is using the database, so it is not reported down."""
    pool = await asyncpg.create_pool(dedicated_postgres_server.dsn, min_size=1, max_size=1)
    watch = DependencyWatch(_LOG, interval=0.1)
    watch.add("postgres", pool_check(pool))
    try:
        async with pool.acquire() as conn:
            busy = asyncio.ensure_future(conn.execute("SELECT pg_sleep(3)"))
            await asyncio.sleep(0.2)
            started = asyncio.get_running_loop().time()
            await watch.check_once()
            assert asyncio.get_running_loop().time() - started < 1
            assert watch.problem() is None
            await busy
    finally:
        await pool.close()


async def test_nats_down_while_the_client_reconnects(dedicated_nats_server: NatsServer) -> None:
    """A client that lost its server is reported down until it has reconnected to the server
    restarted on the same address."""
    nc = await nats.connect(
        dedicated_nats_server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1
    )
    watch = DependencyWatch(_LOG, interval=0.1)
    watch.add("nats", nats_check(nc))
    stop = asyncio.Event()
    running = asyncio.ensure_future(watch.run(stop))
    try:
        await asyncio.to_thread(dedicated_nats_server.kill)
        for _ in range(50):
            if watch.problem():
                break
            await asyncio.sleep(0.1)
        assert watch.problem() == "nats unreachable: connection lost, reconnecting"
        await asyncio.to_thread(dedicated_nats_server.restart)
        for _ in range(50):
            if watch.problem() is None:
                break
            await asyncio.sleep(0.1)
        assert watch.details() == {"dependencies": {"nats": "up"}}
    finally:
        stop.set()
        await running
        await nc.close()


async def test_a_check_that_raises_counts_as_failed_and_is_logged() -> None:
    """A check that raises something unforeseen makes its dependency unreachable, with the error
    named and logged, instead of ending the watch (and with it the service)."""

    async def broken() -> str | None:
        raise RuntimeError("no idea")

    watch = DependencyWatch(_LOG, interval=0.1)
    watch.add("nats", broken)
    with capture_logs() as logs:
        await watch.check_once()
    assert watch.problem() == "nats unreachable: check failed: RuntimeError('no idea')"
    assert [e["event"] for e in logs] == ["dependency_check_failed", "dependency_lost"]
