"""Fixtures of the store tests: a migrated pool, a JetStream context and a stream layout.

Adapter: the shared session fixtures (``tests/conftest.py``) were not there when these tests
were written, so the servers come from ``relay.embedded`` here; swap to the shared ones when
they land.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from services.store.migrate import migrate

from relay.bus import Layout, ensure_streams
from relay.embedded import NatsServer, PostgresServer


@pytest.fixture(scope="session")
def store_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("store-pg"), fsync=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def store_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("store-nats")).start()
    yield server
    server.stop()


async def create_database(server_url: str) -> str:
    """A new empty database on the server of ``server_url``; its URL."""
    name = f"store_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
async def empty_database(store_postgres: PostgresServer) -> str:
    """URL of a fresh database with no schema."""
    return await create_database(store_postgres.dsn)


@pytest.fixture
async def database(empty_database: str) -> str:
    """URL of a fresh migrated database."""
    conn = await asyncpg.connect(empty_database)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return empty_database


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def prefix() -> str:
    return f"T{uuid.uuid4().hex[:10]}"


@pytest.fixture
def layout(prefix: str) -> Layout:
    return Layout(prefix)


@pytest.fixture
def nats_server_url(store_nats: NatsServer) -> str:
    return store_nats.url


@pytest.fixture
async def nc(nats_server_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_server_url)
    yield client
    await client.close()


@pytest.fixture
async def js(nc: NATS, layout: Layout) -> JetStreamContext:
    context = nc.jetstream()
    await ensure_streams(context, layout)
    return context


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path
