"""Retention (PROTOCOL.md §20.6): every ``collect_interval_seconds`` the store forgets objects last
referenced before the event horizon (``MIM_NETWORK_MEMORY_DAYS`` ago, never inside the head).

Any store replica may run it; the delete is one statement, so two replicas running it together
only find less to remove. A failed run is logged and tried again at the next interval.
"""

from __future__ import annotations

import time

import asyncpg

from relay.db import Db, retention
from relay.runner import Context
from services.store import metrics
from services.store.settings import StoreSettings

__all__ = ["collect_once", "run"]


async def collect_once(db: Db, settings: StoreSettings) -> dict[str, int]:
    """One retention run; counts what it removed per kind."""
    removed = await retention.collect(
        db, int(time.time()), settings.network_memory_days, settings.network_head_days
    )
    for kind, count in removed.items():
        metrics.COLLECTED.labels(kind).inc(count)
    return removed


async def run(ctx: Context, db: Db, settings: StoreSettings) -> None:
    """Collect now and then every interval, until the service stops."""
    while not ctx.stop.is_set():
        try:
            removed = await collect_once(db, settings)
            ctx.log.info("retention_collected", removed=sum(removed.values()), **removed)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            ctx.log.warning("retention_failed", error=repr(exc))
        await ctx.sleep(settings.collect_interval_seconds)
