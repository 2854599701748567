"""Sync speed: node B pulls node A's objects on loopback, beside B's own ingest rate.

    python bench/sync.py [--objects 50000] [--resync-percent 1]

One run, everything on loopback, every child process stopped at the end:

- embedded nats-server and PostgreSQL (``relay.embedded``, fsync off) in a temporary directory;
- node A: a key, a board, a thread and ``--objects`` posts made at difficulty 1 (``mim.create``
  with ``mim.pow.local_minter``), copied straight into A's ``objects`` table (rows from the
  store's own ``row_of``) as arrived ``HELD_FOR_SECONDS`` ago; A's gateway
  (``python -m services.gateway``) on a free port. The live tail and the syncer's cursor both
  reach back 120 s on purpose (an object stamped before a page time may commit after it), so
  objects that arrived within that window are fetched again by every sync; A is given objects it
  has held for a while, as a node has, not all inside that window;
- ingest: B's validator and store (``python -m services.validator``, ``services.store``, minimum
  PoW 1) over an empty database; the same objects are published to its ingest stream and timed
  until all are committed. Printed: objects/s;
- sync: the same two services over another empty database and stream prefix; one
  ``services.syncer`` sync of A, in this process, is timed until every object is committed.
  Printed: objects/s, bytes fetched, and sync/ingest (target >= 0.80);
- re-sync: ``--resync-percent`` more posts are copied into A and B syncs again. Printed: bytes
  fetched as a percentage of the full pull (target <= 5%). B skips the caches it took whole;
- re-sync after A regenerated its caches (A's gateway restarted): as many posts again, and a
  sync. Every object sits in the newest slice, whose ID changes with each generation, so its
  manifests are read again: the worst case of a slice this large.

Request proof of work stays at the protocol's 15. Nothing is asserted: the machine is shared and
noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import nats
from services.syncer.client import Client
from services.syncer.peers import parse_remote
from services.syncer.settings import SyncerSettings
from services.syncer.sync import Report, Syncer

from common import copy_rows, fresh_database, spawn, stop
from mim import canonical, create
from mim import pow as mim_pow
from mim.entities import Provable
from mim.signing import SigningKey
from relay import RelayError
from relay.bus import Layout
from relay.db import identity
from relay.embedded import NatsServer, PostgresServer, free_port
from relay.publisher import Publisher
from relay.settings import load
from relay.submit import submit_many

MINT = mim_pow.local_minter(random.Random(11).randrange)
AUTHOR = SigningKey.generate(bytes(range(2, 34)))
DIFFICULTY = 1
WAIT_SECONDS = float(os.environ.get("BENCH_WAIT", "600"))  # longest wait for the stores to commit
#: How long before the sync node A's objects arrived: beyond the 120 s overlaps, as in life.
HELD_FOR_SECONDS = 600
PUBLISH_AT_ONCE = 512  # publishes awaiting their acks together


def _forum(count: int, now: int, label: str) -> list[Provable]:
    """A key, a board and a thread, then ``count`` posts in the thread."""
    key = create.create("key", {"name": label}, AUTHOR, DIFFICULTY, now - 900, MINT)
    board = create.create("board", {"name": label}, AUTHOR, DIFFICULTY, now - 800, MINT)
    thread = create.create(
        "thread", {"board": board.fingerprint, "name": label}, AUTHOR, DIFFICULTY, now - 700, MINT
    )
    return [key, board, thread, *_posts(board, thread, count, now - 600, label)]


def _posts(board: Provable, thread: Provable, count: int, now: int, label: str) -> list[Provable]:
    values = {"board": board.fingerprint, "thread": thread.fingerprint}
    return [
        create.create("post", {**values, "body": f"{label} {n}"}, AUTHOR, DIFFICULTY, now, MINT)
        for n in range(count)
    ]


async def _count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM objects"))
    finally:
        await conn.close()


async def _wait_count(url: str, want: int, within: float) -> None:
    deadline = time.monotonic() + within
    while (held := await _count(url)) < want:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {held} of {want} objects committed after {within:.0f} s")
        await asyncio.sleep(0.1)


def _env(nats_url: str, url: str, prefix: str, root: Path, port: int) -> dict[str, str]:
    return {
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": url,
        "MIM_STREAM_PREFIX": prefix,
        "MIM_DATA_DIR": str(root / prefix),
        "MIM_LOG_LEVEL": os.environ.get("MIM_LOG_LEVEL", "warning"),
        "MIM_MIN_POW": str(DIFFICULTY),
        "MIM_GATEWAY_HOST": "127.0.0.1",
        "MIM_GATEWAY_PORT": str(port),
        "MIM_GATEWAY_LOCAL_PORT": "0",
        "MIM_GATEWAY_METRICS_PORT": "0",
        "MIM_GATEWAY_CACHE_INTERVAL_SECONDS": "3600",
        "MIM_VALIDATOR_METRICS_PORT": "0",
        "MIM_STORE_METRICS_PORT": "0",
    }


@asynccontextmanager
async def _services(env: dict[str, str], names: Sequence[str]) -> AsyncIterator[None]:
    """The named services running with ``env`` until the block ends (SIGTERM, then kill)."""
    children = []
    quiet = env["MIM_LOG_LEVEL"] == "warning"
    try:
        for name in names:
            proc = spawn(f"services.{name}", env, stdout=subprocess.DEVNULL if quiet else None)
            children.append(proc)
            await _wait_ready(env, name, proc)
        yield
    finally:
        await asyncio.to_thread(stop, children)


async def _wait_ready(env: dict[str, str], name: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the service's streams or port answer: a fixed settle for workers, TCP for HTTP."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}")
        if name != "gateway":
            await asyncio.sleep(2.0)  # the worker binds its consumer within its first second
            return
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", int(env["MIM_GATEWAY_PORT"]))
        except OSError:
            await asyncio.sleep(0.2)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise SystemExit(f"{name} not ready within 60 s")


async def _ingest(nats_url: str, url: str, prefix: str, objects: Sequence[Provable]) -> float:
    """Publish ``objects`` to ``prefix``'s ingest stream; seconds until all are committed."""
    nc = await nats.connect(nats_url)
    started = time.perf_counter()
    try:
        publisher, layout = await Publisher(nc, timeout=60).start(), Layout(prefix)
        raws = [(o.kind, canonical.encode(o)) for o in objects]
        for at in range(0, len(raws), PUBLISH_AT_ONCE):
            results = await submit_many(publisher, layout, raws[at : at + PUBLISH_AT_ONCE])
            refused = [r for r in results if isinstance(r, RelayError)]
            if refused:
                raise SystemExit(
                    f"{len(refused)} objects refused by the ingest stream: {refused[0]}"
                )
    finally:
        await nc.close()
    await _wait_count(url, len(objects), within=WAIT_SECONDS)
    return time.perf_counter() - started


async def _sync(
    nats_url: str, url: str, prefix: str, remote: str, want: int
) -> tuple[float, Report]:
    """One sync of ``remote`` into ``url``; seconds until ``want`` objects are committed."""
    settings = load(
        SyncerSettings,
        nats_url=nats_url,
        database_url=url,
        stream_prefix=prefix,
        scheme="http",
        allowed_networks="127.0.0.0/8",
        request_timeout_seconds=300.0,
    )
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    nc = await nats.connect(nats_url)
    client = Client(request_timeout=300.0, scheme="http", max_page_bytes=settings.max_page_bytes)
    try:
        key = await identity.create(pool)
        syncer = Syncer(settings, client, pool, Layout(prefix), key, nc=nc)
        started = time.perf_counter()
        report = await syncer.sync(parse_remote(remote))
        if not report.ok:
            raise SystemExit(f"sync failed: {report.summary()}")
        await _wait_count(url, want, within=WAIT_SECONDS)
        return time.perf_counter() - started, report
    finally:
        await client.aclose()
        await nc.close()
        await pool.close()


async def _run(args: argparse.Namespace, root: Path, nats_url: str, pg: PostgresServer) -> None:
    now = int(time.time())
    made = time.perf_counter()
    objects = _forum(args.objects, now, "bench sync")
    made = time.perf_counter() - made
    urls = {
        name: await fresh_database(pg, name, migrated=True)
        for name in ("node_a", "ingest_b", "sync_b")
    }
    await copy_rows(urls["node_a"], objects, now - HELD_FOR_SECONDS)
    size = sum(len(canonical.encode(o)) for o in objects)
    print(f"{len(objects)} objects ({size / 1e6:.1f} MB canonical) made in {made:.1f} s")

    worker = ("store", "validator")
    ingest_env = _env(nats_url, urls["ingest_b"], "BENCHI", root, free_port())
    async with _services(ingest_env, worker):
        ingest_s = await _ingest(nats_url, urls["ingest_b"], "BENCHI", objects)
    ingest_rate = len(objects) / ingest_s
    print(f"ingest   {ingest_rate:10.0f} objects/s   ({ingest_s:.1f} s)")

    a_port = free_port()
    a_env = _env(nats_url, urls["node_a"], "BENCHA", root, a_port)
    b_env = _env(nats_url, urls["sync_b"], "BENCHS", root, free_port())
    remote = f"127.0.0.1:{a_port}"
    async with _services(b_env, worker):
        async with _services(a_env, ("gateway",)):
            sync_s, full = await _sync(nats_url, urls["sync_b"], "BENCHS", remote, len(objects))
            sync_rate = len(objects) / sync_s
            print(
                f"sync     {sync_rate:10.0f} objects/s   ({sync_s:.1f} s, "
                f"{full.tally.bytes / 1e6:.1f} MB fetched, pages {full.tally.pages})"
            )
            print(f"sync/ingest {sync_rate / ingest_rate:.2f}   (target >= 0.80)")

            more = max(1, args.objects * args.resync_percent // 100)
            board, thread = objects[1], objects[2]
            extra = _posts(board, thread, more, now - 30, "bench resync")
            await copy_rows(urls["node_a"], extra, int(time.time()))
            total = len(objects) + more
            _, again = await _sync(nats_url, urls["sync_b"], "BENCHS", remote, total)
            _resync("re-sync", more, again, full)
        # A restarted regenerates its caches: the slice holding every object gets a new ID (its
        # end is the generation time), so this sync reads that slice's manifests again
        extra = _posts(board, thread, more, now - 20, "bench resync 2")
        await copy_rows(urls["node_a"], extra, int(time.time()))
        async with _services(a_env, ("gateway",)):
            _, after = await _sync(nats_url, urls["sync_b"], "BENCHS", remote, total + more)
        _resync("re-sync after A regenerated its caches", more, after, full)


def _resync(what: str, more: int, report: Report, full: Report) -> None:
    share = 100 * report.tally.bytes / full.tally.bytes
    print(f"{what}: {more} new objects, {report.tally.bytes / 1e6:.2f} MB fetched, "
          f"pages {report.tally.pages}")  # fmt: skip
    print(f"  bytes / full pull {share:.1f}%   (target <= 5%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=50_000)
    parser.add_argument("--resync-percent", type=int, default=1)
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.WARNING)  # the syncer logs each request otherwise
    root = Path(tempfile.mkdtemp(prefix="mimrelay-bench-sync-"))
    nats_server = NatsServer(root / "nats").start()
    postgres = PostgresServer(root / "pg", fsync=False).start()
    try:
        asyncio.run(_run(args, root, nats_server.url, postgres))
    finally:
        postgres.stop()
        nats_server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
