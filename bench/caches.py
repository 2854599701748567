"""Cache generations on heads of growing size: full build, nothing new, 1% new, and gateway RSS.

    python bench/caches.py [--sizes 10000,100000] [--memory-mb 64]

One run, everything on loopback, every child process stopped at the end. For each head size:

- embedded nats-server and PostgreSQL (``relay.embedded``, fsync off) in a temporary directory,
  the store's migrations applied, a node key;
- the head: that many posts COPY-loaded into ``objects`` (rows from the store's own ``row_of``),
  well-formed canonical posts of about 1 KB (the build copies stored bytes and verifies nothing,
  so their proofs are not minted), last referenced evenly over the 14-day head, in batches so the
  loader holds one batch at a time;
- timed in this process, each a generation as the builder runs it
  (``services.gateway.generation.generate``), wall time and the CPU of this process and of
  PostgreSQL: **full** (the first generation: every cache of the head), **nothing new** (the next
  generation, a minute later), **1% new** (1% more posts stored, then a generation covering
  them). Printed beside the full build, the baseline of the same run: nothing new / full (target
  <= 1%), 1% new / full (target <= 5%);
- the gateway as an operator runs it (``python -m services.gateway``) on the same head with its
  caches dropped, so it builds them all at start, then every page of every cache fetched through
  its API twice (plain and gzip); printed: its peak RSS (``VmHWM``) and RSS at the end, beside its
  memory setting ``MIM_GATEWAY_CACHE_MEMORY_BYTES`` (target <= 300 MB at 1M posts).

Nothing is asserted: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import subprocess
import time
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from pathlib import Path

import asyncpg
import httpx
from services.gateway.settings import GatewaySettings

from common import COLUMNS, embedded_servers, fresh_database, spawn, stop
from mim import canonical, pages
from mim.entities import ApiResponse, Post
from relay.caches.files import Signer
from relay.db import identity, storing
from relay.embedded import PostgresServer, free_port
from relay.settings import DAY_SECONDS, load
from services.gateway import generation

BATCH = 20_000  # posts generated and copied at once
HEAD_SECONDS = 14 * DAY_SECONDS
_TICKS = os.sysconf("SC_CLK_TCK")


def _posts(count: int, seed: int) -> Iterator[Post]:
    """``count`` well-formed posts of about 1 KB, each its own fingerprint."""
    rnd = random.Random(seed)
    board, thread = f"{rnd.getrandbits(256):064x}", f"{rnd.getrandbits(256):064x}"
    owner = f"{rnd.getrandbits(256):064x}"
    for n in range(count):
        yield Post(
            fingerprint=f"{rnd.getrandbits(256):064x}",
            board=board,
            thread=thread,
            parent=thread,
            body=f"post {seed}/{n}: " + "words of a post that people write " * 12,
            owner=owner,
            owner_publickey=owner,
            creation=1_700_000_000 + n,
            proof_of_work=f"MIM1:21::::{rnd.getrandbits(64):016x}:1:{rnd.getrandbits(512):0128x}",
            signature=f"{rnd.getrandbits(512):0128x}",
            entity_version=1,
        )


async def _load(url: str, count: int, seed: int, start: int, end: int) -> float:
    """COPY ``count`` posts last referenced evenly over ``[start, end)``; seconds taken."""
    began = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        step = (end - start) / max(count, 1)
        batch: list[tuple[object, ...]] = []
        for n, post in enumerate(_posts(count, seed)):
            when = start + int(n * step)
            batch.append((*astuple(storing.row_of(post)), when, when))
            if len(batch) == BATCH:
                await conn.copy_records_to_table("objects", records=batch, columns=COLUMNS)
                batch = []
        if batch:
            await conn.copy_records_to_table("objects", records=batch, columns=COLUMNS)
        await conn.execute("ANALYZE objects")
    finally:
        await conn.close()
    return time.perf_counter() - began


def _cpu_of(pids: list[int]) -> float:
    """CPU seconds (user and system) used so far by ``pids``."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def _postgres_pids(postgres: PostgresServer) -> list[int]:
    """The postmaster and every backend it forked."""
    root = postgres.pid
    found = [root] if root else []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == root:
                found.append(int(entry.name))
    return found


@dataclass
class Timed:
    wall: float
    cpu: float  # this process
    db_cpu: float  # PostgreSQL
    caches: int

    def line(self, what: str, full: Timed | None = None) -> str:
        text = (
            f"  {what:<14} {self.wall:8.3f} s wall, {self.cpu:7.3f} s CPU here,"
            f" {self.db_cpu:6.2f} s CPU in PostgreSQL, {self.caches} caches built"
        )
        if full is not None:
            text += f"   {100 * self.wall / full.wall:5.2f}% of full (wall)"
        return text


async def _generation(
    pool: asyncpg.Pool, signer: Signer, settings: GatewaySettings, now: int, db_pids: list[int]
) -> Timed:
    wall, cpu, db_cpu = time.perf_counter(), time.process_time(), _cpu_of(db_pids)
    outcome = await generation.generate(pool, signer, settings, now)
    return Timed(
        time.perf_counter() - wall,
        time.process_time() - cpu,
        _cpu_of(db_pids) - db_cpu,
        outcome.built + outcome.merged,
    )


def _rss(pid: int) -> tuple[int, int]:
    """Peak and current resident set of ``pid``, bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    peak = re.search(r"VmHWM:\s+(\d+) kB", status)
    now = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert peak and now, status
    return int(peak.group(1)) * 1024, int(now.group(1)) * 1024


async def _fetch_all(base: str) -> int:
    """Every page of every cache the gateway lists, plain then gzip; how many fetched."""
    fetched = 0
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        for endpoint in ("v0/c0/posts", "v0/c0/boards"):
            index = canonical.loads(
                ApiResponse, (await client.get(f"/{endpoint}/index.json")).content
            )
            for cache in index.results or ():
                for accept in ("identity", "gzip"):
                    for folder in ("", "index/", "manifest/"):
                        n = 0
                        while True:
                            path = f"/{endpoint}/{cache.response_url}/{folder}{n}.json"
                            answer = await client.get(path, headers={"Accept-Encoding": accept})
                            if answer.status_code != 200:
                                break
                            fetched += 1
                            n += 1
    return fetched


async def _wait_listening(port: int, proc: subprocess.Popen[bytes], within: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < within:
        if proc.poll() is not None:
            raise SystemExit(f"the gateway exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return time.perf_counter() - started
        except OSError:
            await asyncio.sleep(0.2)
    raise SystemExit(f"the gateway did not listen within {within:.0f} s")


async def _gateway_rss(url: str, nats_url: str, root: Path, memory: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE cache_files, cache_slices, cache_indexes, cache_generations")
    finally:
        await conn.close()
    port = free_port()
    env = {
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": url,
        "MIM_STREAM_PREFIX": f"B{port}",
        "MIM_DATA_DIR": str(root / "gateway"),
        "MIM_LOG_LEVEL": "warning",
        "MIM_GATEWAY_HOST": "127.0.0.1",
        "MIM_GATEWAY_PORT": str(port),
        "MIM_GATEWAY_METRICS_PORT": "0",
        "MIM_GATEWAY_CACHE_MEMORY_BYTES": str(memory),
        "MIM_GATEWAY_CACHE_INTERVAL_SECONDS": "3600",
    }
    proc = spawn("services.gateway", env)
    try:
        built_in = await _wait_listening(port, proc, within=3600)
        cpu = _cpu_of([proc.pid])
        after_build = _rss(proc.pid)
        fetched = await _fetch_all(f"http://127.0.0.1:{port}")
        peak, current = _rss(proc.pid)
    finally:
        await asyncio.to_thread(stop, [proc])
    mb = 1 << 20
    print(
        f"  gateway      full build at start {built_in:.1f} s wall ({cpu:.1f} s CPU, start-up"
        f" included), peak RSS {after_build[0] / mb:.0f} MB after it"
    )
    print(
        f"  gateway      {fetched} pages served: peak RSS {peak / mb:.0f} MB, now"
        f" {current / mb:.0f} MB; memory setting {memory / mb:.0f} MB (target <= 300 MB at 1M)"
    )


async def _run_size(
    size: int, postgres: PostgresServer, nats_url: str, root: Path, memory: int
) -> None:
    url = await fresh_database(postgres, f"caches_{size}", migrated=True)
    now = int(time.time())
    loaded = await _load(url, size, 1, now - HEAD_SECONDS + 3600, now - 600)
    print(f"\n{size} posts in the head (COPY {loaded:.1f} s)")
    settings = load(GatewaySettings, database_url=url, nats_url=nats_url)
    # one pool for every generation, warm as the gateway's is
    pool = await asyncpg.create_pool(url, min_size=settings.pool_size, max_size=settings.pool_size)
    try:
        signer = Signer(await identity.create(pool), 8090, pages.NODE_TYPE_LIVE)
        db_pids = _postgres_pids(postgres)
        full = await _generation(pool, signer, settings, now, db_pids)
        idle = await _generation(pool, signer, settings, now + 60, db_pids)
        more = max(1, size // 100)
        await _load(url, more, 2, now + 70, now + 130)
        grown = await _generation(pool, signer, settings, now + 300, db_pids)
    finally:
        await pool.close()
    print(full.line("full"))
    print(idle.line("nothing new", full) + "   (target <= 1%)")
    print(grown.line(f"1% new ({more})", full) + "   (target <= 5%)")
    await _gateway_rss(url, nats_url, root, memory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--memory-mb", type=int, default=64)
    args = parser.parse_args()
    with embedded_servers("caches") as (root, nats_server, postgres):
        for size in (int(s) for s in args.sizes.split(",")):
            asyncio.run(_run_size(size, postgres, nats_server.url, root, args.memory_mb << 20))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\n(this process, the builder timed above: peak RSS {peak:.0f} MB)")


if __name__ == "__main__":
    main()
