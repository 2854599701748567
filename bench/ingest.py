"""End-to-end ingest rate (publish → validated → committed) beside the bare verification rate.

Starts a nats-server and a PostgreSQL (``relay.embedded``), makes ``--objects`` posts at
difficulty 10 (cheap to mint, a realistic verification cost: the work of checking a proof does
not depend on its difficulty, and the node's minimum is set to 10 to match), then:

1. bare: ``mim.verify.verify`` on those objects in this one process;
2. for 1 and 2 validator processes plus one store: submit everything, time until the last
   object is committed in PostgreSQL.

Objects are submitted with ``relay.submit.submit_many``, 256 at a time, as a bulk source does.
The three measurements are interleaved over ``--rounds`` rounds and the best of each is kept, as
the other benches do on this shared machine. Prints objects/s and the ratios (targets: 1
validator ≥ 60% of bare; 2 validators > 1). Run: ``python bench/ingest.py [--objects 5000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import nats
from nats.js import JetStreamContext

from common import fresh_database, spawn, stop
from mim import canonical, verify
from mim import pow as mim_pow
from mim.create import create
from mim.signing import SigningKey
from relay.bus import Layout, StreamLimits, ensure_streams
from relay.embedded import NatsServer, PostgresServer
from relay.publisher import Confirmed, Publisher
from relay.submit import submit_many

DIFFICULTY = 10
#: Objects submitted at once, and chunks in flight, as a bulk source (import, syncer) does.
CHUNK = 256
CHUNKS_IN_FLIGHT = 4


def make(count: int) -> list[bytes]:
    key = SigningKey.generate(bytes(range(32)))
    mint = mim_pow.local_minter(random.Random(3).randrange)
    values = {"board": "b" * 64, "thread": "c" * 64, "parent": "c" * 64}
    return [
        canonical.encode(
            create(
                "post", {**values, "body": f"bench {n}"}, key, DIFFICULTY, 1_700_000_000 + n, mint
            )
        )
        for n in range(count)
    ]


def bare_rate(objects: list[bytes]) -> float:
    policy = verify.Policy.uniform(DIFFICULTY)
    started = time.perf_counter()
    for raw in objects:
        assert verify.verify("post", raw, policy).ok
    return len(objects) / (time.perf_counter() - started)


async def wait_ready(db: str, conn_attempts: int = 200) -> None:
    for _ in range(conn_attempts):
        try:
            conn = await asyncpg.connect(db)
            try:
                await conn.fetchval("SELECT count(*) FROM objects")
                return
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(0.1)
    raise RuntimeError("the store did not create its schema")


async def publish_all(publisher: Publisher, layout: Layout, objects: list[bytes]) -> None:
    """Submit ``objects`` in chunks of ``CHUNK``, ``CHUNKS_IN_FLIGHT`` chunks at a time."""
    chunks = [objects[n : n + CHUNK] for n in range(0, len(objects), CHUNK)]
    slots = asyncio.Semaphore(CHUNKS_IN_FLIGHT)

    async def one(chunk: list[bytes]) -> None:
        async with slots:
            results = await submit_many(publisher, layout, [("post", raw) for raw in chunk])
        refused = [r for r in results if not isinstance(r, Confirmed)]
        if refused:
            raise RuntimeError(f"{len(refused)} objects refused, first: {refused[0]}")

    await asyncio.gather(*(one(c) for c in chunks))


async def all_committed(js: JetStreamContext, layout: Layout, count: int) -> None:
    """Wait until ``count`` objects were accepted and the store has acked every one.

    The store acks only after its commit and the accepted stream drops what is acked, so this is
    "all committed" without asking PostgreSQL: a ``count(*)`` every few milliseconds over a
    growing table would itself take a good share of a core from the pipeline being measured.
    """
    while True:
        info = await js.stream_info(layout.accepted_stream)
        if info.state.last_seq >= count and info.state.messages == 0:
            return
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def end_to_end(
    objects: list[bytes], validators: int, nats_url: str, postgres: PostgresServer
) -> float:
    prefix = f"B{validators}{random.randrange(10**6)}"
    db_url = await fresh_database(postgres, f"bench_{prefix.lower()}")
    env = {
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": db_url,
        "MIM_STREAM_PREFIX": prefix,
        "MIM_MIN_POW": str(DIFFICULTY),
        "MIM_VALIDATOR_METRICS_PORT": "0",
        "MIM_STORE_METRICS_PORT": "0",
        "MIM_LOG_LEVEL": "warning",
    }
    procs = [spawn("services.store", env)] + [
        spawn("services.validator", env) for _ in range(validators)
    ]
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        layout = Layout(prefix)
        await ensure_streams(js, layout, StreamLimits())
        await wait_ready(db_url)
        await asyncio.sleep(3)  # validators up
        publisher = await Publisher(nc, timeout=60).start()
        started = time.perf_counter()
        await publish_all(publisher, layout, objects)
        await all_committed(js, layout, len(objects))
        elapsed = time.perf_counter() - started
        async with connect(db_url) as conn:
            stored = await conn.fetchval("SELECT count(*) FROM objects")
        if stored != len(objects):
            raise RuntimeError(f"{stored} of {len(objects)} objects stored")
    finally:
        await nc.close()
        stop(procs)
    return len(objects) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; best kept")
    args = parser.parse_args()
    objects = make(args.objects)
    bare, one, two = 0.0, 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        nats_server = NatsServer(Path(tmp) / "nats").start()
        postgres = PostgresServer(Path(tmp) / "pg", fsync=False).start()
        try:
            for round_ in range(1, args.rounds + 1):
                rates = (
                    bare_rate(objects),
                    await end_to_end(objects, 1, nats_server.url, postgres),
                    await end_to_end(objects, 2, nats_server.url, postgres),
                )
                share = rates[1] / rates[0]
                print(f"round {round_}: bare {rates[0]:.0f}/s, 1 validator {rates[1]:.0f}/s, "
                      f"2 validators {rates[2]:.0f}/s  ({share:.0%} of bare)")  # fmt: skip
                bare, one, two = max(bare, rates[0]), max(one, rates[1]), max(two, rates[2])
        finally:
            postgres.stop()
            nats_server.stop()
    print(f"objects                 {args.objects} posts at difficulty {DIFFICULTY}, best of "
          f"{args.rounds} rounds")  # fmt: skip
    print(f"bare verify (1 process) {bare:8.0f} objects/s")
    print(f"end to end, 1 validator {one:8.0f} objects/s  ({one / bare:.0%} of bare; target 60%)")
    print(f"end to end, 2 validators{two:8.0f} objects/s  ({two / one:.2f}x one validator)")


if __name__ == "__main__":
    asyncio.run(main())
