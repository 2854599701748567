"""The store's schema in test databases, and a node's pipeline (validator and store) for a test."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg

from relay.bus import Layout
from relay.db.schema import migrate
from tests.helpers.procs import ServiceProcess


async def migrate_template(url: str) -> None:
    """Apply the store's migrations to the template database ``fresh_database`` is cloned from.

    A test module that needs the schema returns this from its ``database_template_setup``.
    """
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()


@asynccontextmanager
async def running_pipeline(nats_url: str, database_url: str, layout: Layout) -> AsyncIterator[None]:
    """A validator and a store process of this node, until the block ends: what enters the ingest
    stream (first-party addresses included) is judged and stored; a node of a local test
    network, whose addresses on loopback are stored."""
    env = {
        "MIM_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": database_url,
        "MIM_STREAM_PREFIX": layout.prefix,
        "MIM_MIN_POW": "0",
        "MIM_VALIDATOR_METRICS_PORT": "0",
        "MIM_VALIDATOR_FETCH_TIMEOUT_SECONDS": "0.2",
        "MIM_STORE_METRICS_PORT": "0",
        "MIM_STORE_FETCH_TIMEOUT_SECONDS": "0.2",
    }
    with contextlib.ExitStack() as stack:
        for service in ("store", "validator"):
            proc = stack.enter_context(ServiceProcess(["-m", f"services.{service}"], env=env))
            await asyncio.to_thread(proc.wait_for, "service_ready", 60.0)
        yield


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {within} s"
        await asyncio.sleep(0.05)
