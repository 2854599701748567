"""Where the shared caches could live: a PostgreSQL table beside a JetStream object store.

    python bench/cache_storage.py [--files 200] [--size 140000] [--reads 500]

One run, everything on loopback (embedded nats-server and PostgreSQL, fsync on for both, as in
production), every child process stopped at the end. ``--files`` cache files of ``--size`` bytes
(JSON-like text with hex, gzip-compressed as the gateway keeps them; 140 KB is a 400-post page
compressed) are written, 20 per transaction into a table (``bytea``, no second compression)
and one ``put`` each into an object store; then ``--reads`` files picked at random are read one
after the other, as a replica reads on a memory miss. Printed: MB/s written, files/s read and
the read latency per file, each store the other's baseline.

Nothing is asserted: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import random
import statistics
import time
from collections.abc import Sequence

import asyncpg
import nats
from nats.js.api import ObjectStoreConfig, StorageType

from common import embedded_servers, fresh_database
from relay.embedded import PostgresServer

Files = Sequence[tuple[str, bytes]]


def _files(count: int, size: int) -> list[tuple[str, bytes]]:
    rnd = random.Random(1)
    out = []
    for n in range(count):
        item = '{"fingerprint":"%064x","body":"post number %d","signature":"%0128x"},'
        text = "".join(
            item % (rnd.getrandbits(256), n, rnd.getrandbits(512)) for _ in range(size // 110)
        )
        out.append((f"v0/c0/posts/cache_{n:064x}/0.json", gzip.compress(text.encode(), 1)))
    return out


async def _postgres(url: str, files: Files, reads: Sequence[int]) -> tuple[float, list[float]]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE f (path text PRIMARY KEY, body bytea NOT NULL)")
        await conn.execute("ALTER TABLE f ALTER COLUMN body SET STORAGE EXTERNAL")
        started = time.perf_counter()
        for at in range(0, len(files), 20):
            async with conn.transaction():
                await conn.executemany("INSERT INTO f VALUES ($1, $2)", files[at : at + 20])
        wrote = time.perf_counter() - started
        took = []
        for n in reads:
            started = time.perf_counter()
            body = await conn.fetchval("SELECT body FROM f WHERE path = $1", files[n][0])
            took.append(time.perf_counter() - started)
            assert body == files[n][1]
        return wrote, took
    finally:
        await conn.close()


async def _object_store(url: str, files: Files, reads: Sequence[int]) -> tuple[float, list[float]]:
    nc = await nats.connect(url)
    try:
        config = ObjectStoreConfig(storage=StorageType.FILE)
        store = await nc.jetstream().create_object_store("CACHES", config=config)
        started = time.perf_counter()
        for path, body in files:
            await store.put(path.replace("/", "_"), body)
        wrote = time.perf_counter() - started
        took = []
        for n in reads:
            started = time.perf_counter()
            got = await store.get(files[n][0].replace("/", "_"))
            took.append(time.perf_counter() - started)
            assert got.data == files[n][1]
        return wrote, took
    finally:
        await nc.close()


def _line(name: str, megabytes: float, wrote: float, took: list[float]) -> str:
    per_file = statistics.median(took) * 1000
    return (
        f"  {name:<13} write {megabytes / wrote:6.0f} MB/s   read {len(took) / sum(took):6.0f}"
        f" files/s (median {per_file:.2f} ms)"
    )


async def _run(args: argparse.Namespace, postgres: PostgresServer, nats_url: str) -> None:
    files = _files(args.files, args.size)
    megabytes = sum(len(b) for _, b in files) / 1e6
    reads = [random.Random(2).randrange(len(files)) for _ in range(args.reads)]
    print(f"{len(files)} files, {megabytes:.1f} MB compressed, {len(reads)} reads")
    url = await fresh_database(postgres, "storage")
    pg = await _postgres(url, files, reads)
    obj = await _object_store(nats_url, files, reads)
    print(_line("PostgreSQL", megabytes, *pg))
    print(_line("object store", megabytes, *obj))
    print(
        f"  PostgreSQL / object store: write {obj[0] / pg[0]:.2f}x,"
        f" read {sum(obj[1]) / sum(pg[1]):.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--size", type=int, default=140_000)
    parser.add_argument("--reads", type=int, default=500)
    args = parser.parse_args()
    with embedded_servers("storage", fsync=True) as (_, nats_server, postgres):
        asyncio.run(_run(args, postgres, nats_server.url))


if __name__ == "__main__":
    main()
