"""Two syncer processes of one node share four remote nodes through the syncer's leases."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import defaultdict
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import nats
import pytest

from relay.bus import Layout
from relay.leases import LeaseBucket
from tests.helpers.metrics import sample, scrape
from tests.helpers.procs import ServiceProcess
from tests.services.syncer.conftest import Nodes
from tests.services.syncer.node import Node, forum
from tests.services.syncer.test_service import running_syncer, stop_all, wait_until

pytestmark = pytest.mark.slow

LEASE_SECONDS = 3
Interval = tuple[float, float]


def _at(record: dict[str, Any]) -> float:
    """The Unix time of a log record."""
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def _syncs(proc: ServiceProcess, ended: float) -> dict[str, list[Interval]]:
    """Each remote's syncs by ``proc``, from its log: (started, finished) Unix times; a sync
    still running when the process ended ends at ``ended``."""
    found: dict[str, list[Interval]] = defaultdict(list)
    running: dict[str, float] = {}
    for record in proc.records:
        if record.get("event") == "peer_sync_started":
            running[record["peer"]] = _at(record)
        elif record.get("event") == "peer_sync_finished":
            found[record["remote"]].append((running.pop(record["remote"]), _at(record)))
    for peer, started in running.items():
        found[peer].append((started, ended))
    return found


def _synced_ok(proc: ServiceProcess, since: float = 0.0) -> set[str]:
    return {r["remote"] for r in proc.events("peer_sync_finished") if r["ok"] and _at(r) > since}


def _overlaps(one: list[Interval], other: list[Interval]) -> list[tuple[Interval, Interval]]:
    return [(a, b) for a in one for b in other if a[0] < b[1] and b[0] < a[1]]


async def _held_by(node: Node, holder: str) -> str | None:
    """The remote ``holder`` is syncing now, as the node's syncer bucket says, if any."""
    nc = await nats.connect(node.nats_url)
    try:
        layout = Layout(node.layout.prefix)
        bucket = await LeaseBucket.open(nc.jetstream(), layout.syncer_leases_bucket)
        for key, holding in (await bucket.holdings()).items():
            if key.startswith("remote.") and holding.holder == holder and holding.state == "work":
                return holding.what
    finally:
        await nc.close()
    return None


async def test_two_syncers_share_the_remotes_one_at_a_time_and_take_over_a_dead_ones(
    nodes: Nodes,
) -> None:
    """Two syncer processes of node L, bootstrapped from four remote nodes, bring every remote's
    objects to L, each having synced some remotes and been refused some; no remote is ever
    synced by both at once (their logs' sync intervals never overlap), and the network scan and
    the bootstrap check ran once between them; after one is killed in the middle of a sync, the
    other syncs that remote within the lease's time, and then every remote."""
    local = await nodes("L")
    remotes = [await nodes(name) for name in "ABCD"]
    now = int(time.time())
    made = {r.address: forum(now, f"made on {r.name}") for r in remotes}
    for remote in remotes:
        await remote.hold(made[remote.address])
    extra = {"MIM_SYNCER_LEASE_SECONDS": str(LEASE_SECONDS)}
    with ExitStack() as stack:
        first = stack.enter_context(running_syncer(local, remotes, **extra))
        second = stack.enter_context(running_syncer(local, remotes, **extra))
        await local.wait_holding([o for objects in made.values() for o in objects], within=90)

        async def both_synced() -> bool:
            return bool(_synced_ok(first)) and bool(_synced_ok(second))

        await wait_until("both syncers synced a remote", both_synced, within=60.0)
        victim, survivor = first, second
        holder = victim.last("syncer_started")["holder"]
        taken: str | None = None

        async def victim_mid_sync() -> bool:
            nonlocal taken
            taken = await _held_by(local, holder)
            return taken is not None

        await wait_until("the first syncer in the middle of a sync", victim_mid_sync, within=60.0)
        os.kill(victim.pid, signal.SIGKILL)
        killed = time.time()

        async def lapsed() -> bool:
            return await _held_by(local, holder) is None

        await wait_until("the dead syncer's lease lapses", lapsed, within=30.0)
        freed = time.time() - killed
        await asyncio.to_thread(victim.wait, 10.0)

        async def taken_over() -> bool:
            return any(_at(r) > killed for r in survivor.events("peer_sync_started")
                       if r["peer"] == taken)  # fmt: skip

        await wait_until("the survivor syncs the dead one's remote", taken_over, within=60.0)
        handover = min(
            _at(r) - killed
            for r in survivor.events("peer_sync_started")
            if r["peer"] == taken and _at(r) > killed
        )

        async def survivor_syncs_all() -> bool:
            return _synced_ok(survivor, since=killed) == set(made)

        await wait_until("the survivor syncs every remote", survivor_syncs_all, within=60.0)
        base = survivor.wait_for("service_started")["metrics_url"]
        text = await asyncio.to_thread(scrape, f"{base}/metrics")
        assert (sample(text, "mim_syncer_leases_total", lease="remote", outcome="refused") or 0) > 0
        assert (sample(text, "mim_syncer_leases_total", lease="remote", outcome="taken") or 0) > 0
        assert await stop_all(survivor) == [0]

    assert _synced_ok(first) | _synced_ok(second) == set(made)
    both = [*first.records, *second.records]
    assert [r["event"] for r in both].count("network_scan_finished") == 1
    rounds = ("bootstrap_finished", "bootstrap_unsuccessful")
    assert sum(r["event"] in rounds for r in both) == 1
    by_victim, by_survivor = _syncs(first, killed), _syncs(second, time.time())
    for peer in made:
        assert _overlaps(by_victim[peer], by_survivor[peer]) == [], peer
    # the server drops the entry at most a lease after its last renewal (whole seconds)
    assert freed <= LEASE_SECONDS + 2.0, f"the lease lapsed {freed:.2f} s after the kill"
    print(
        f"\nsyncer handover: {taken}'s lease free {freed:.2f} s and the remote synced again"
        f" {handover:.2f} s after its syncer was killed (lease {LEASE_SECONDS} s)"
    )
    await stop_all(*local.procs, *(p for r in remotes for p in r.procs))
