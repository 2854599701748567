"""A running gateway for the commands that write through it (``submit``, ``token``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mim.entities import Post
from relay.bus import ensure_streams
from tests.helpers.servers import TemplateSetup
from tests.helpers.store import migrate_template
from tests.services.gateway.conftest import Running, make, serving


@pytest.fixture
def database_template_setup() -> TemplateSetup | None:
    return migrate_template


@pytest.fixture
async def gateway(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> AsyncIterator[Running]:
    """A gateway whose revoked tokens stop working within a fifth of a second."""
    async with serving(
        fresh_database, nats_url, stream_prefix, tmp_path, token_refresh_seconds=0.2
    ) as served:
        assert served.gateway.nc is not None
        await ensure_streams(served.gateway.nc.jetstream(), served.gateway.layout)
        yield served


def posts(count: int, label: str) -> list[Post]:
    """``count`` posts made now, their bodies ``label`` and a number."""
    now = int(time.time())
    made = [make("post", {"board": "b" * 64, "thread": "t" * 64, "body": f"{label} {n}"}, now)
            for n in range(count)]  # fmt: skip
    return [p for p in made if isinstance(p, Post)]


async def queued(running: Running) -> int:
    """Messages on the gateway's ingest stream."""
    assert running.gateway.nc is not None
    info = await running.gateway.nc.jetstream().stream_info(running.gateway.layout.ingest_stream)
    return info.state.messages
