"""The ingest pipeline from outside: a validator and a store running, streams drained, rows
committed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from contextlib import ExitStack

import asyncpg
from nats.js import JetStreamContext

from relay.bus import Layout
from tests.helpers.procs import ServiceProcess


@contextlib.contextmanager
def running_pipeline(
    nats_url: str, database_url: str, prefix: str, min_pow: int, **extra: str
) -> Iterator[dict[str, str]]:
    """A store and a validator on ``database_url`` (migrated by the store), with the settings
    ``extra`` (``MIM_*`` variables), until the block ends, when both must stop cleanly; yields
    their environment."""
    env = {
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": database_url,
        "MIM_STREAM_PREFIX": prefix,
        "MIM_MIN_POW": str(min_pow),
        "MIM_VALIDATOR_METRICS_PORT": "0",
        "MIM_STORE_METRICS_PORT": "0",
        **extra,
    }
    with ExitStack() as stack:
        procs = [
            stack.enter_context(ServiceProcess(["-m", f"services.{name}"], env))
            for name in ("store", "validator")
        ]
        for proc in procs:
            proc.wait_for("service_ready", timeout=60)
        yield env
        for proc in procs:
            proc.terminate()
        assert [proc.wait(30) for proc in procs] == [0, 0]


async def wait_drained(
    js: JetStreamContext,
    layout: Layout,
    database_url: str,
    *,
    stored: int,
    rejected: int = 0,
    limit: float = 60.0,
) -> None:
    """Until the database holds ``stored`` objects, the rejected stream ``rejected`` messages,
    and the ingest and accepted streams are empty; fail naming what is short after ``limit`` s."""
    deadline = time.monotonic() + limit
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            held = await conn.fetchval("SELECT count(*) FROM objects")
            refused = (await js.stream_info(layout.rejected_stream)).state.messages
            ingest = (await js.stream_info(layout.ingest_stream)).state.messages
            accepted = (await js.stream_info(layout.accepted_stream)).state.messages
            if held >= stored and refused >= rejected and ingest == 0 and accepted == 0:
                return
            assert time.monotonic() < deadline, (
                f"not drained in {limit}s: {held}/{stored} stored, {refused}/{rejected} rejected,"
                f" {ingest} on ingest, {accepted} accepted pending"
            )
            await asyncio.sleep(0.25)
    finally:
        await conn.close()
