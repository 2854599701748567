"""Retention (PROTOCOL.md §20.6): every ``collect_interval_seconds`` the store forgets objects last
referenced before the event horizon (``MIM_NETWORK_MEMORY_DAYS`` ago, never inside the head).

One store replica at a time runs it: a run holds the ``retention`` lease in the store's bucket
(``relay.leases``) and leaves it resting for the interval, so the interval holds node-wide and two
replicas never scan the table at once; the others ask again every ``lease_seconds``, and take over
within that of an interval's end when the replica that ran it is gone. A failed run is logged and
tried again at the next interval.
"""

from __future__ import annotations

import time

from relay import BusError, BusUnavailable, LeaseLost
from relay.db import Db, retention
from relay.health import DATABASE_FAILURES
from relay.leases import Lease, keep
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


async def _turn(ctx: Context, db: Db, settings: StoreSettings, lease: Lease) -> None:
    """Run retention if this replica's turn has come (it takes the lease)."""
    try:
        if not await lease.take():
            return
    except (BusUnavailable, BusError) as exc:
        ctx.log.warning("retention_lease_unavailable", error=str(exc))
        return
    try:
        removed = await keep(lease, collect_once(db, settings))
        ctx.log.info("retention_collected", removed=sum(removed.values()), **removed)
    except LeaseLost as exc:
        ctx.log.warning("retention_lease_lost", reason=str(exc))
        return
    except DATABASE_FAILURES as exc:
        ctx.log.warning("retention_failed", error=repr(exc))
    await lease.rest(settings.collect_interval_seconds)


async def run(ctx: Context, db: Db, settings: StoreSettings, lease: Lease) -> None:
    """Take a turn now and then every ``lease_seconds`` (or the interval, if shorter), until the
    service stops."""
    pause = min(settings.lease_seconds, settings.collect_interval_seconds)
    while not ctx.stop.is_set():
        await _turn(ctx, db, settings, lease)
        await ctx.sleep(pause)
