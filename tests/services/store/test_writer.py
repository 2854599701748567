"""The writer against real JetStream and PostgreSQL: stored, acked after commit, never lost."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable

import asyncpg
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import REGISTRY
from services.store.writer import Writer

from mim import canonical
from mim.entities import Address
from relay.bus import Layout, headers, publish
from relay.db.schema import migrate
from relay.embedded import PostgresServer
from relay.first_party import FIRST_PARTY, Sighting, marks
from relay.location import parse_rules
from relay.metrics import start_metrics_server
from tests.services.store.factory import Factory, publish_objects


def scrape(url: str, name: str) -> float:
    """Sum of the samples of metric ``name`` at ``url``."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def wait_for(check: Callable[[], object], seconds: float, what: str) -> None:
    """Poll ``check`` (sync or async) until it is truthy, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


async def count_rows(url: str) -> int:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return -1
    try:
        return int(await conn.fetchval("SELECT count(*) FROM objects"))
    finally:
        await conn.close()


async def test_writer_stores_published_objects_and_acks_them(
    nc: NATS, js: JetStreamContext, layout: Layout, pool: asyncpg.Pool
) -> None:
    """Objects on the accepted stream become rows with their exact JSON; the stream drains."""
    objs = Factory(3).posts(40)
    await publish_objects(js, layout, objs)
    writer = Writer(nc, pool, layout, batch_size=16, fetch_timeout=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        await wait_for(lambda: writer.handled >= 40, 20, "40 handled")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    rows = await pool.fetch("SELECT kind, fingerprint, body FROM objects")
    assert {(r["kind"], r["fingerprint"], r["body"]) for r in rows} == {
        (o.kind, o.fingerprint, canonical.dumps(o)) for o in objs
    }
    info = await js.consumer_info(layout.accepted_stream, layout.store_consumer)
    assert info.num_pending == 0 and info.num_ack_pending == 0


async def test_redelivered_batch_changes_nothing(
    nc: NATS, js: JetStreamContext, layout: Layout, pool: asyncpg.Pool
) -> None:
    """An object published again (a new message id) leaves every row exactly as it was."""
    objs = Factory(4).posts(10)
    await publish_objects(js, layout, objs)
    writer = Writer(nc, pool, layout, batch_size=32, fetch_timeout=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        await wait_for(lambda: writer.handled >= 10, 20, "first pass")
        before = await pool.fetch("SELECT * FROM objects ORDER BY fingerprint")
        await js.publish(layout.accepted_subject("post"), canonical.encode(objs[-1]),
                         headers={"Mim-Kind": "post"})  # fmt: skip
        await wait_for(lambda: writer.handled >= 11, 20, "redelivery")
        after = await pool.fetch("SELECT * FROM objects ORDER BY fingerprint")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert [tuple(r) for r in before] == [tuple(r) for r in after]


async def test_postgres_down_for_seconds_loses_nothing_and_counts_errors(
    nc: NATS, js: JetStreamContext, layout: Layout, dedicated_postgres_server: PostgresServer
) -> None:
    """With PostgreSQL stopped mid-run the writer retries; afterwards every object is stored."""
    server = dedicated_postgres_server
    port = server.port
    assert port is not None
    url = server.dsn
    metrics = start_metrics_server()
    try:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2, timeout=2)
        await migrate(pool)
        errors_before = scrape(metrics.metrics_url, "mim_store_db_errors_total")
        objs = Factory(5).posts(120)
        writer = Writer(nc, pool, layout, batch_size=10, fetch_timeout=0.2, retry_min=0.1,
                        retry_max=0.5)  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop))
        await publish_objects(js, layout, objs[:40])
        await wait_for(lambda: writer.handled >= 40, 20, "first 40 stored")
        await asyncio.to_thread(server.stop)
        await publish_objects(js, layout, objs[40:])
        await asyncio.sleep(3)
        server = PostgresServer(server.data_dir, port=port, fsync=False)
        await asyncio.to_thread(server.start)

        async def all_stored() -> bool:
            return await count_rows(url) == len(objs)

        await wait_for(all_stored, 30, "all objects stored after the outage")
        stop.set()
        await asyncio.wait_for(task, 10)
        await pool.close()
        errors_after = scrape(metrics.metrics_url, "mim_store_db_errors_total")
        conn = await asyncpg.connect(url)
        bodies = {r["body"] for r in await conn.fetch("SELECT body FROM objects")}
        await conn.close()
    finally:
        metrics.stop()
        server.stop()
    assert bodies == {canonical.dumps(o) for o in objs}
    assert errors_after > errors_before


async def _publish_address(js: JetStreamContext, layout: Layout, address: Address) -> None:
    """An address on the accepted stream, heard from its own node (first-party)."""
    hdrs = headers(kind="address", source=FIRST_PARTY, message_id=f"a:{address.location}")
    hdrs.update(marks(Sighting(last_ping=1000)))
    await publish(js, layout.accepted_subject("address"), canonical.encode(address), headers=hdrs)


async def test_addresses_are_stored_at_their_canonical_place_or_refused(
    nc: NATS, js: JetStreamContext, layout: Layout, pool: asyncpg.Pool
) -> None:
    """An address in a short, mapped or bracketed form is stored in its canonical spelling; one
    naming loopback or a private range is refused and counted, unless the node allows that
    network, and the batch is acked either way."""
    refused_before = (
        REGISTRY.get_sample_value(
            "mim_store_addresses_total", {"source": "first_party", "outcome": "refused"}
        )
        or 0.0
    )
    places = ["127.1", "::ffff:127.0.0.1", "10.1.2.3", "[::ffff:8.8.8.8]", "0x7f.0.0.2"]
    for location in places:
        await _publish_address(js, layout, Address(location=location, port=4000, entity_version=1))
    rules = parse_rules("127.0.0.0/8")
    writer = Writer(nc, pool, layout, batch_size=16, fetch_timeout=0.2, address_rules=rules)
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        await wait_for(lambda: writer.handled >= len(places), 20, "every address handled")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    rows = await pool.fetch("SELECT location, location_type FROM addresses ORDER BY location")
    assert [(r["location"], r["location_type"]) for r in rows] == [
        ("127.0.0.1", 4),
        ("127.0.0.2", 4),
        ("8.8.8.8", 4),
    ]
    refused = REGISTRY.get_sample_value(
        "mim_store_addresses_total", {"source": "first_party", "outcome": "refused"}
    )
    assert refused == refused_before + 1  # 10.1.2.3: private, and not allowed
    info = await js.consumer_info(layout.accepted_stream, layout.store_consumer)
    assert info.num_pending == 0 and info.num_ack_pending == 0
