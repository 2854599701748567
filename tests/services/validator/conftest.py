"""Fixtures of the validator tests: a JetStream layout of the test's own, a migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS

from relay.bus import Layout, StreamLimits, ensure_blocklist, ensure_streams
from tests.helpers.servers import TemplateSetup
from tests.helpers.store import migrate_template


@pytest.fixture
def database_template_setup() -> TemplateSetup | None:
    """Databases of these tests carry the store's schema (the ``blocks`` table)."""
    return migrate_template


@pytest.fixture
def layout(stream_prefix: str) -> Layout:
    return Layout(stream_prefix)


@pytest.fixture
async def nc(nats_url: str, layout: Layout) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    js = client.jetstream()
    await ensure_streams(js, layout, StreamLimits(duplicate_window_seconds=60))
    await ensure_blocklist(js, layout)
    yield client
    for stream in (layout.ingest_stream, layout.accepted_stream, layout.rejected_stream):
        await js.delete_stream(stream)
    await js.delete_key_value(layout.blocklist_bucket)
    await client.close()
