"""The ingest pipeline on a JetStream cluster of three real nats-servers, every stream kept by all
three: the server leading the ingest stream is killed mid-ingest, the pipeline goes on through the
other two, nothing is lost or doubled, and the server comes back and catches up.

Size: ``MIM_E2E_CLUSTER_OBJECTS`` objects (default 20000).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest
from nats.js import JetStreamContext
from services.gateway.settings import GatewaySettings
from services.gateway.shared import open_shared

from mim import canonical
from relay import TransientError
from relay.bus import Layout
from relay.connect import close_nats, connect_nats
from relay.leases import LeaseBucket
from relay.settings import load
from relay.submit import submit
from tests.e2e.test_ingest import Node, _held, _posts
from tests.helpers.cluster import NatsCluster, running_nats_cluster
from tests.helpers.pipeline import wait_drained

OBJECTS = int(os.environ.get("MIM_E2E_CLUSTER_OBJECTS", "20000"))
REPLICAS = 3
SUBMIT_DEADLINE_SECONDS = 120.0

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[NatsCluster]:
    with running_nats_cluster() as members:
        yield members


async def _submit_all(
    js: JetStreamContext,
    layout: Layout,
    cases: list[tuple[str, bytes]],
    acked: list[tuple[float, float]],
    third: asyncio.Event,
) -> int:
    """Submit every case, each until JetStream confirms it, as a client that sees 503s retries;
    how many tries were refused. ``acked`` gets when each confirmed try was sent and confirmed,
    and ``third`` is set once a third are confirmed."""
    sem = asyncio.Semaphore(256)
    refused = 0

    async def one(kind: str, raw: bytes) -> None:
        nonlocal refused
        deadline = time.monotonic() + SUBMIT_DEADLINE_SECONDS
        async with sem:
            while True:
                sent = time.monotonic()
                try:
                    await submit(js, layout, kind, raw, ack_wait_seconds=5)
                except TransientError:
                    refused += 1
                    assert time.monotonic() < deadline, "JetStream refused for too long"
                    await asyncio.sleep(0.2)
                    continue
                acked.append((sent, time.monotonic()))
                if len(acked) >= len(cases) // 3:
                    third.set()
                return

    await asyncio.gather(*(one(kind, raw) for kind, raw in cases))
    return refused


async def _leader(js: JetStreamContext, stream: str) -> str:
    info = await js.stream_info(stream)
    assert info.cluster is not None and info.cluster.leader
    return info.cluster.leader


async def _caught_up(js: JetStreamContext, layout: Layout, member: str) -> bool:
    """Whether ``member`` holds every stream and consumer of ``layout``, current with its
    leader."""
    peers = []
    for stream in (layout.ingest_stream, layout.accepted_stream, layout.rejected_stream):
        peers.append((await js.stream_info(stream)).cluster)
    for stream, consumer in (
        (layout.ingest_stream, layout.validator_consumer),
        (layout.accepted_stream, layout.store_consumer),
    ):
        peers.append((await js.consumer_info(stream, consumer)).cluster)
    for info in peers:
        assert info is not None
        if info.leader == member:
            continue
        replica = next((r for r in info.replicas or () if r.name == member), None)
        if replica is None or not replica.current or replica.lag:
            return False
    return True


async def test_losing_the_stream_leaders_server_mid_ingest_loses_and_doubles_nothing(
    cluster: NatsCluster, fresh_database: str, stream_prefix: str
) -> None:
    """With three validators and a store on a three-server cluster (replicas 3), the server
    leading the ingest stream is killed a third of the way into the submissions: submissions
    are confirmed again within seconds, every object is stored exactly once (each stream
    recorded each exactly once), every service stays up and exits 0, and the restarted server
    catches up with every stream and consumer."""
    posts = _posts(OBJECTS, seed=3)
    cases = [("post", canonical.encode(p)) for p in posts]
    node = Node(cluster.url, fresh_database, stream_prefix)
    node.env["MIM_STREAM_REPLICAS"] = str(REPLICAS)
    layout = Layout(stream_prefix, replicas=REPLICAS)
    with node:
        nc = await connect_nats(cluster.url, "test", attempts=3, delay=0.2)
        try:
            js = nc.jetstream()
            info = await js.stream_info(layout.ingest_stream)
            assert info.config.num_replicas == REPLICAS
            victim = await _leader(js, layout.ingest_stream)

            acked: list[tuple[float, float]] = []
            third = asyncio.Event()
            submitting = asyncio.ensure_future(_submit_all(js, layout, cases, acked, third))
            await third.wait()
            await asyncio.to_thread(cluster.servers[victim].kill)
            killed_at = time.monotonic()
            refused = await submitting
            # the first try sent after the kill that JetStream confirmed
            confirmed_again = min(done for sent, done in acked if sent > killed_at) - killed_at
            assert await _leader(js, layout.ingest_stream) != victim

            await wait_drained(js, layout, fresh_database, stored=OBJECTS, limit=150)
            await asyncio.to_thread(cluster.servers[victim].restart)
            restarted_at = time.monotonic()
            while not await _caught_up(js, layout, victim):
                assert time.monotonic() - restarted_at < 60, f"{victim} did not catch up"
                await asyncio.sleep(0.1)
            caught_up = time.monotonic() - restarted_at

            assert await _held(fresh_database) == {("post", p.fingerprint): 0 for p in posts}
            for stream in (layout.ingest_stream, layout.accepted_stream):
                state = (await js.stream_info(stream)).state
                assert (state.messages, state.last_seq) == (0, OBJECTS), stream
            assert (await js.stream_info(layout.rejected_stream)).state.messages == 0
        finally:
            await close_nats(nc)
        assert all(p.proc.poll() is None for p in [node.store, *node.validators])
        assert node.stop() == [0, 0, 0, 0]
    print(
        f"\ncluster failover: {victim} killed with {OBJECTS // 3} of {OBJECTS} confirmed;"
        f" submissions confirmed again after {confirmed_again:.2f} s ({refused} tries refused);"
        f" restarted member caught up in {caught_up:.2f} s"
    )


async def test_the_gateways_shared_state_and_the_leases_are_kept_by_every_member(
    cluster: NatsCluster, stream_prefix: str
) -> None:
    """On a three-server cluster with replicas 3, every bucket and object store of the gateways'
    shared request state and the syncers' and stores' lease buckets is kept by all three."""
    layout = Layout(stream_prefix, replicas=REPLICAS)
    nc = await connect_nats(cluster.url, "test", attempts=3, delay=0.2)
    try:
        js = nc.jetstream()
        await open_shared(js, layout, load(GatewaySettings))
        for name in (layout.syncer_leases_bucket, layout.store_leases_bucket):
            await LeaseBucket.open(js, name, replicas=layout.replicas)
        kept: dict[str, tuple[int | None, int]] = {}
        for info in await js.streams_info():
            if info.config.name and stream_prefix in info.config.name:
                peers = info.cluster.replicas if info.cluster is not None else None
                kept[info.config.name] = (info.config.num_replicas, len(peers or ()))
    finally:
        await close_nats(nc)
    buckets = [
        layout.nonces_bucket,
        layout.leases_bucket,
        layout.ping_leases_bucket,
        layout.inflight_bucket,
        layout.rates_bucket,
        layout.containers_bucket,
        layout.syncer_leases_bucket,
        layout.store_leases_bucket,
    ]
    # each kept by its leader and the two other members
    streams = [f"KV_{b}" for b in buckets] + [f"OBJ_{layout.container_pages_bucket}"]
    assert kept == {stream: (REPLICAS, REPLICAS - 1) for stream in streams}
