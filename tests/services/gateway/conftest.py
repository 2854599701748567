"""Fixtures of the gateway tests: a migrated database with objects, and a running gateway."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn
from services.gateway.app import Apps
from services.gateway.service import listen, server_config, start
from services.gateway.settings import GatewaySettings
from services.gateway.state import Gateway

from mim import create
from mim import pow as mim_pow
from mim.entities import Address, Provable
from mim.signing import SigningKey
from relay.db import addresses as db_addresses
from relay.db import storing
from relay.runner import Context
from relay.settings import load
from tests.helpers.servers import TemplateSetup
from tests.helpers.store import migrate_template

AUTHOR = SigningKey.generate(bytes(range(7, 39)))
MINT = mim_pow.local_minter(random.Random(11).randrange)
DIFFICULTY = 2
JSON = {"Content-Type": "application/json"}  # headers of a JSON request body
LOOPBACK = "127.0.0.0/8,::1/128"  # what a local test network allows (MIM_ALLOWED_NETWORKS)


@pytest.fixture
def database_template_setup() -> TemplateSetup | None:
    return migrate_template


def make(kind: str, values: dict[str, Any], now: int) -> Provable:
    return create.create(kind, values, AUTHOR, DIFFICULTY, now, MINT)


async def store(url: str, objects: list[Provable], now: int) -> None:
    """Write ``objects`` with the store's own writer functions, arriving at ``now``."""
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await storing.store_objects(conn, objects, now)
    finally:
        await conn.close()


def sample(now: int) -> list[Provable]:
    """A key, a board, a thread, two posts and a vote, all signed by AUTHOR."""
    key = make("key", {"name": "author"}, now - 100)
    board = make("board", {"name": "gateway tests"}, now - 90)
    thread = make("thread", {"board": board.fingerprint, "name": "first"}, now - 80)
    post = make(
        "post", {"board": board.fingerprint, "thread": thread.fingerprint, "body": "a"}, now - 70
    )
    reply = make(
        "post",
        {
            "board": board.fingerprint,
            "thread": thread.fingerprint,
            "parent": post.fingerprint,
            "body": "b",
        },
        now - 60,
    )
    vote = make(
        "vote",
        {
            "board": board.fingerprint,
            "thread": thread.fingerprint,
            "target": post.fingerprint,
            "typeclass": 1,
            "type": 1,
        },
        now - 50,
    )
    return [key, board, thread, post, reply, vote]


async def store_address(url: str, address: Address, now: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await db_addresses.store_third_party(conn, address, now)
    finally:
        await conn.close()


@dataclass
class Running:
    url: str  # the public listener
    local: str  # the local listener (the operator's)
    gateway: Gateway
    settings: GatewaySettings
    apps: Apps


@asynccontextmanager
async def serving(
    database: str, nats_url: str, prefix: str, data_dir: Path, **overrides: Any
) -> AsyncIterator[Running]:
    """A gateway with ``overrides`` in its settings, both listeners on free loopback ports and
    served as the service serves them (``services.gateway.service.server_config``)."""
    public_sock, local_sock = listen("127.0.0.1", 0), listen("127.0.0.1", 0)
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "database_url": database,
        "stream_prefix": prefix,
        "data_dir": data_dir,
        "gateway_host": "127.0.0.1",
        "gateway_port": public_sock.getsockname()[1],
        "local_port": local_sock.getsockname()[1],
        "connect_attempts": 3,
        "min_pow": DIFFICULTY,  # what the test objects carry
        **overrides,
    }
    settings = load(GatewaySettings, **values)
    ctx = Context("gateway", settings)
    try:
        apps = await start(ctx, port=settings.gateway_port)
        servers = [
            (uvicorn.Server(server_config(apps.public, settings, public=True)), public_sock),
            (uvicorn.Server(server_config(apps.local, settings, public=False)), local_sock),
        ]
        tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in servers]
        try:
            async with asyncio.timeout(20):
                while not all(server.started for server, _ in servers):
                    assert not any(t.done() for t in tasks), "the gateway stopped while starting"
                    await asyncio.sleep(0.02)
            gateway: Gateway = apps.public.state.gateway
            yield Running(
                f"http://127.0.0.1:{settings.gateway_port}",
                f"http://127.0.0.1:{settings.local_port}",
                gateway,
                settings,
                apps,
            )
        finally:
            for server, _ in servers:
                server.should_exit = True
            await asyncio.wait_for(asyncio.gather(*tasks), 20)
    finally:
        await ctx.aclose()
        public_sock.close()
        local_sock.close()


@pytest.fixture
async def running(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> AsyncIterator[Running]:
    """A gateway serving ``fresh_database`` on free local ports, as a node of a local test network
    (its remotes, on loopback, are recorded)."""
    async with serving(
        fresh_database,
        nats_url,
        stream_prefix,
        tmp_path,
        max_body_bytes=1 << 20,
        allowed_networks=LOOPBACK,
    ) as served:
        yield served
