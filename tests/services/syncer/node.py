"""One Mim node of the sync tests: its own database and stream prefix, real service processes.

``start_node`` clones the migrated template into a fresh database and starts a store, a validator
and a gateway (``python -m services.<name>``) on loopback with a low minimum PoW. A ``Node`` can
submit objects to its ingest stream, read what its store holds, and build a ``Syncer`` running in
the test's process against its database and streams, as the syncer service would.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import nats
from services.syncer.client import Client
from services.syncer.settings import SyncerSettings
from services.syncer.sync import Syncer

from mim import canonical, create
from mim import pow as mim_pow
from mim.entities import Provable
from mim.signing import SigningKey
from relay.bus import Layout
from relay.db import identity
from relay.embedded import free_port
from relay.settings import load
from relay.submit import submit
from tests.helpers.procs import ServiceProcess
from tests.helpers.servers import create_database, drop_database, unique_name

DIFFICULTY = 8
AUTHOR = SigningKey.generate(bytes(range(40, 72)))
MINT = mim_pow.local_minter(random.Random(5).randrange)
#: What a node on this machine may store and dial: its neighbours all listen on loopback.
LOOPBACK = "127.0.0.0/8,::1/128"


def make(kind: str, values: dict[str, Any], now: int) -> Provable:
    return create.create(kind, values, AUTHOR, DIFFICULTY, now, MINT)


def change(obj: Provable, changes: dict[str, Any], now: int) -> Provable:
    return create.update(obj, changes, AUTHOR, DIFFICULTY, now, MINT)


def forum(now: int, label: str) -> list[Provable]:
    """A key, a board, a thread and two posts, all signed by AUTHOR."""
    key = make("key", {"name": f"author {label}"}, now - 100)
    board = make("board", {"name": f"board {label}"}, now - 90)
    thread = make("thread", {"board": board.fingerprint, "name": f"thread {label}"}, now - 80)
    posts = [
        make(
            "post",
            {"board": board.fingerprint, "thread": thread.fingerprint, "body": f"{label} {n}"},
            now - 70 + n,
        )
        for n in range(2)
    ]
    return [key, board, thread, *posts]


@dataclass
class Node:
    name: str
    database_url: str
    nats_url: str
    layout: Layout
    port: int
    host: str = "127.0.0.1"  # where the gateway listens
    procs: list[ServiceProcess] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def submit(self, objects: Iterable[Provable]) -> None:
        """Publish ``objects`` to this node's ingest stream, as a local author would."""
        nc = await nats.connect(self.nats_url)
        try:
            js = nc.jetstream()
            for obj in objects:
                await submit(js, self.layout, obj.kind, canonical.encode(obj))
        finally:
            await nc.close()

    async def hold(self, objects: Sequence[Provable]) -> None:
        """Submit ``objects`` and wait until the store holds each of them."""
        await self.submit(objects)
        await self.wait_holding(objects)

    async def held(self) -> dict[tuple[str, str], int]:
        """``(kind, fingerprint) -> last_update`` of every object the store holds."""
        conn = await asyncpg.connect(self.database_url)
        try:
            rows = await conn.fetch("SELECT kind, fingerprint, last_update FROM objects")
        finally:
            await conn.close()
        return {(r["kind"], r["fingerprint"]): int(r["last_update"]) for r in rows}

    async def wait_holding(self, objects: Iterable[Provable], within: float = 30.0) -> None:
        """Wait until the store holds each object at its version (or fail after ``within`` s)."""
        want = {(o.kind, o.fingerprint): o.last_update for o in objects}
        deadline = time.monotonic() + within
        while True:
            held = await self.held()
            missing = {k: v for k, v in want.items() if held.get(k) != v}
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} lacks {missing} after {within}s")
            await asyncio.sleep(0.2)

    async def cli(self, *args: str) -> tuple[int, str, str]:
        """``mimrelay ARGS`` as this node's operator runs it: exit status, stdout, stderr."""
        env = {
            **os.environ,
            "MIM_DATABASE_URL": self.database_url,
            "MIM_NATS_URL": self.nats_url,
            "MIM_STREAM_PREFIX": self.layout.prefix,
            "MIM_PUBLIC_PORT": str(self.port),
            "MIM_CONNECT_ATTEMPTS": "3",
            "MIM_LOG_LEVEL": "warning",
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "relay.cli", *args,
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.database_url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    def settings(self, **overrides: Any) -> SyncerSettings:
        values: dict[str, Any] = {
            "nats_url": self.nats_url,
            "database_url": self.database_url,
            "stream_prefix": self.layout.prefix,
            "public_port": self.port,
            "allowed_networks": LOOPBACK,
            "connect_timeout_seconds": 5.0,
            "request_timeout_seconds": 20.0,
            "pow_timeout_seconds": 30.0,
            **overrides,
        }
        return load(SyncerSettings, **values)

    @asynccontextmanager
    async def syncer(self, **overrides: Any) -> AsyncIterator[Syncer]:
        """A ``Syncer`` of this node, in this process."""
        settings = self.settings(**overrides)
        async with AsyncExitStack() as stack:
            pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=4)
            stack.push_async_callback(pool.close)
            nc = await nats.connect(self.nats_url)
            stack.push_async_callback(nc.close)
            client = Client(
                connect_timeout=settings.connect_timeout_seconds,
                request_timeout=settings.request_timeout_seconds,
                scheme=settings.scheme,
                rules=settings.address_rules(),
            )
            stack.push_async_callback(client.aclose)
            key = await identity.create(pool)
            yield Syncer(settings, client, pool, self.layout, key, nc=nc)


def _env(node: Node, data_dir: Path) -> dict[str, str]:
    return {
        "MIM_NATS_URL": node.nats_url,
        "MIM_DATABASE_URL": node.database_url,
        "MIM_STREAM_PREFIX": node.layout.prefix,
        "MIM_DATA_DIR": str(data_dir),
        "MIM_MIN_POW": str(DIFFICULTY),
        "MIM_CONNECT_ATTEMPTS": "10",
        "MIM_GATEWAY_HOST": node.host,
        "MIM_GATEWAY_PORT": str(node.port),
        "MIM_GATEWAY_LOCAL_PORT": "0",
        "MIM_GATEWAY_METRICS_PORT": "0",
        "MIM_GATEWAY_CACHE_INTERVAL_SECONDS": "1",
        "MIM_VALIDATOR_METRICS_PORT": "0",
        "MIM_VALIDATOR_FETCH_TIMEOUT_SECONDS": "0.2",
        "MIM_STORE_METRICS_PORT": "0",
        "MIM_STORE_FETCH_TIMEOUT_SECONDS": "0.2",
        "MIM_PUBLIC_PORT": str(node.port),
        "MIM_SYNCER_METRICS_PORT": "0",
        "MIM_SYNCER_TICK_SECONDS": "3600",
        "MIM_SYNCER_SCAN_INTERVAL_SECONDS": "3600",
        "MIM_ALLOWED_NETWORKS": LOOPBACK,
    }


@asynccontextmanager
async def start_node(
    name: str,
    admin_url: str,
    template: str,
    nats_url: str,
    data_dir: Path,
    host: str = "127.0.0.1",
    *,
    syncer: bool = False,
) -> AsyncIterator[Node]:
    """A running node: store, validator and gateway processes over a fresh database, and with
    ``syncer`` a syncer that syncs only when asked (its ticks an hour apart, no bootstrap)."""
    db_name = unique_name(f"node_{name.lower()}")
    url = await create_database(admin_url, db_name, template)
    layout = Layout(f"S{unique_name(name)[-12:].upper()}")
    node = Node(name, url, nats_url, layout, free_port(), host=host)
    env = _env(node, data_dir)
    services = [("store", "service_ready"), ("validator", "service_ready")]
    services.append(("gateway", "gateway_ready"))
    if syncer:
        services.append(("syncer", "service_ready"))
    try:
        for service, ready in services:
            proc = ServiceProcess(["-m", f"services.{service}"], env=env).start()
            node.procs.append(proc)
            await asyncio.to_thread(proc.wait_for, ready, 60.0)
        yield node
    finally:
        for proc in reversed(node.procs):
            if proc.proc.poll() is None:
                proc.terminate()
        for proc in node.procs:
            try:
                await asyncio.to_thread(proc.wait, 20.0)
            finally:
                proc.__exit__(None, None, None)
        await drop_database(admin_url, db_name)
