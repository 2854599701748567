"""``python -m services.syncer``: the neighbour loop, the network scan, and syncs on request.

Opens NATS, the pool, one HTTP client pool for syncs and one for pings, waits for the node key
(made by the gateway), then runs until SIGTERM: the scheduler (:mod:`services.syncer.peers`, with
the bootstrap check of :mod:`services.syncer.bootstrap`), the network scan
(:mod:`services.syncer.scan`) every ``scan_interval_seconds``, and the operator's "sync this
remote now" requests (:mod:`services.syncer.requests`). Request proofs of work go to the miners,
or to the service's process pool (``MIM_SYNCER_PROCESS_WORKERS``) when none answers.

Any number of replicas may run: they share the remotes and the schedules through leases
(:mod:`services.syncer.claims`), each replica named by a ``holder`` in its logs.
"""

from __future__ import annotations

from typing import cast

import asyncpg

from mim import pages
from relay.bus import Layout, StreamLimits, ensure_streams
from relay.cpu import CpuPool
from relay.db import addresses, identity
from relay.first_party import Reporter
from relay.leases import holder_name
from relay.publisher import Publisher
from relay.runner import Context, run_service
from services.syncer import metrics, requests
from services.syncer.bootstrap import Bootstrap
from services.syncer.claims import Shared
from services.syncer.client import Client
from services.syncer.peers import (
    Exclusions,
    Outcome,
    Remote,
    Scheduler,
    parse_bootstrap,
    stored_remote,
)
from services.syncer.scan import Pinger, Scanner
from services.syncer.settings import SyncerSettings
from services.syncer.sync import Syncer

__all__ = ["known_remotes", "main", "make_client"]


def make_client(settings: SyncerSettings, *, for_pings: bool = False) -> Client:
    """The HTTP client pool the settings describe: for syncs, or for a scan's pings.

    Pings get a pool of their own, as wide as a scan page, so a scan never waits for (nor starves)
    the syncs' connections; a node page is small, and one remote is rarely pinged twice in a row.
    """
    return Client(
        connect_timeout=settings.connect_timeout_seconds,
        request_timeout=settings.request_timeout_seconds,
        idle_seconds=5.0 if for_pings else settings.idle_seconds,
        max_connections=settings.scan_page_size if for_pings else settings.max_connections,
        max_page_bytes=settings.max_page_bytes,
        scheme=settings.scheme,
        rules=settings.address_rules(),
    )


async def known_remotes(pool: asyncpg.Pool, settings: SyncerSettings) -> list[Remote]:
    """Stored addresses we could dial, newest ping or sync first; refreshes the peers gauge."""
    stored = await addresses.recent(pool, limit=settings.address_read_max)
    by_type: dict[str, int] = {}
    remotes: list[Remote] = []
    for row in stored:
        address, remote = stored_remote(row, settings.address_rules())
        by_type[str(address.type)] = by_type.get(str(address.type), 0) + 1
        if remote is not None:
            remotes.append(remote)
    metrics.PEERS_KNOWN.clear()
    for node_type, count in by_type.items():
        metrics.PEERS_KNOWN.labels(node_type).set(count)
    return remotes


async def main(ctx: Context) -> None:
    """Run the scheduler, the network scan and sync requests until ``ctx.stop`` is set."""
    settings = cast(SyncerSettings, ctx.settings)
    bootstrap = parse_bootstrap(settings.bootstrap)
    pool = await ctx.pool(min_size=1, max_size=settings.pool_size)
    nc = await ctx.nats()
    js = nc.jetstream()
    layout = Layout.from_settings(settings)
    await ensure_streams(js, layout, StreamLimits.from_settings(settings))
    claims = await Shared.open(js, layout, holder_name(), settings.lease_seconds)
    key = await identity.wait(
        pool, attempts=settings.connect_attempts, delay=settings.connect_retry_seconds
    )
    node_id = pages.node_id(key.public_hex)
    client = make_client(settings)
    ctx.stack.push_async_callback(client.aclose)
    ping_client = make_client(settings, for_pings=True)
    ctx.stack.push_async_callback(ping_client.aclose)
    cpu = ctx.processes(CpuPool(settings.process_workers))
    syncer = Syncer(settings, client, pool, layout, key, nc=nc, cpu=cpu)
    pinger = Pinger(ping_client, Reporter(js, layout), node_id)
    scanner = Scanner(
        pinger,
        pool,
        table_max=settings.address_read_max,
        page_size=settings.scan_page_size,
        skip_seconds=settings.scan_skip_seconds,
        interval_seconds=settings.scan_interval_seconds,
        rules=settings.address_rules(),
        claims=claims,
        recheck_seconds=settings.lease_seconds,
    )
    bootstrapper = Bootstrap(
        bootstrap,
        client,
        pool,
        Publisher(nc, timeout=settings.request_timeout_seconds),
        layout,
        pinger,
        interval_seconds=settings.bootstrap_interval_seconds,
        retry_seconds=settings.bootstrap_retry_seconds,
        page_size=settings.scan_page_size,
        rules=settings.address_rules(),
    )

    async def sync(remote: Remote) -> Outcome:
        report = await syncer.sync(remote)
        ctx.counters["syncs"] += 1
        ctx.counters["syncs_ok"] += int(report.ok)
        return report.outcome

    async def known() -> list[Remote]:
        return await known_remotes(pool, settings)

    scheduler = Scheduler(
        sync,
        known,
        bootstrap=bootstrap,
        neighbour_count=settings.neighbour_count,
        max_concurrent=settings.max_concurrent_syncs,
        scout_attempts=settings.scout_attempts,
        explore_every=settings.explore_every_ticks,
        bootstrap_every=settings.bootstrap_explore_every_ticks,
        ca_nodes=parse_bootstrap(settings.ca_nodes),
        scan=scanner.scan_if_stale,
        bootstrapper=bootstrapper if bootstrap else None,
        exclusions=Exclusions(settings.exclusion_live_seconds, settings.exclusion_static_seconds),
        claims=claims,
    )
    ctx.log.info("syncer_started", node_id=node_id, holder=claims.holder,
                 bootstrap=[str(r) for r in bootstrap],
                 last_bootstrap=await bootstrapper.last(),
                 ca_nodes=[str(r) for r in scheduler.ca_nodes],
                 max_concurrent=settings.max_concurrent_syncs)  # fmt: skip
    await requests.serve(ctx, nc, layout, syncer.sync, claims)
    ctx.mark_ready()
    ctx.spawn(scanner.run(ctx.stop), name="network-scan")
    await scheduler.run(ctx.stop, settings.tick_seconds)


if __name__ == "__main__":
    raise SystemExit(run_service("syncer", SyncerSettings, main))
