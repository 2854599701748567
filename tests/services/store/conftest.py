"""Store fixtures on top of the shared servers: migrated databases, a pool, JetStream, a layout."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from relay.bus import Layout, ensure_streams
from tests.helpers.servers import TemplateSetup
from tests.helpers.store import migrate_template


@pytest.fixture
def database_template_setup() -> TemplateSetup:
    return migrate_template


@pytest.fixture
def database(fresh_database: str) -> str:
    """URL of a new database holding the store's schema."""
    return fresh_database


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def prefix(stream_prefix: str) -> str:
    return stream_prefix


@pytest.fixture
def layout(prefix: str) -> Layout:
    return Layout(prefix)


@pytest.fixture
def nats_server_url(nats_url: str) -> str:
    return nats_url


@pytest.fixture
async def js(nc: NATS, layout: Layout) -> JetStreamContext:
    context = nc.jetstream()
    await ensure_streams(context, layout)
    return context
