"""``python -m services.store``: migrate, then store accepted objects until SIGTERM.

Beside the writer, every replica answers the operator's block-list requests (one replica of the
queue group takes each) and takes its turn at retention, run by one replica every
``collect_interval_seconds``.
"""

from __future__ import annotations

from typing import cast

from relay.bus import Layout, StreamLimits, ensure_blocklist, ensure_streams
from relay.db.schema import migrate
from relay.leases import LeaseBucket, holder_name
from relay.runner import Context, run_service
from services.store import retention
from services.store.blocks import Keeper
from services.store.settings import StoreSettings
from services.store.writer import Writer


async def main(ctx: Context) -> None:
    """Migrate (every replica may; they queue on a lock), then run the writer until stopped."""
    settings = cast(StoreSettings, ctx.settings)
    pool = await ctx.pool(min_size=1, max_size=settings.pool_size)
    applied = await migrate(pool)
    ctx.log.info("schema_ready", applied=applied)
    nc = await ctx.nats()
    js = nc.jetstream()
    layout = Layout.from_settings(settings)
    await ensure_streams(js, layout, StreamLimits.from_settings(settings))
    keeper = Keeper(pool, await ensure_blocklist(js, layout))
    await nc.subscribe(layout.blocks_subject, queue=layout.store_queue_group, cb=keeper.answer)
    writer = Writer(
        nc,
        pool,
        layout,
        batch_size=settings.batch_size,
        fetch_timeout=settings.fetch_timeout_seconds,
        address_table_max=settings.address_table_max,
        address_rules=settings.address_rules(),
        retry_min=settings.retry_min_seconds,
        retry_max=settings.retry_max_seconds,
    )
    ctx.mark_ready()
    leases = await LeaseBucket.open(js, layout.store_leases_bucket, replicas=layout.replicas)
    lease = leases.lease("schedule.retention", holder_name(), ttl=settings.lease_seconds)
    ctx.spawn(retention.run(ctx, pool, settings, lease), name="retention")
    try:
        await writer.run(ctx.stop)
    finally:
        ctx.counters["handled"] = writer.handled


if __name__ == "__main__":
    raise SystemExit(run_service("store", StoreSettings, main))
