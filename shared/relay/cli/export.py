"""``mimrelay export-static DIR``: the node's head as plain files, a static Mim node (type 255).

Writes the head as the gateway serves its GET side (endpoint ``index.json`` files, cache, index
and manifest pages, all signed by the node key), one six-hour block per cache, so any web server
serving ``DIR`` is crawlable like the live gateway. One block is held in memory at a time.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from mim import pages
from relay.caches import build
from relay.caches.files import Signer
from relay.connect import close_pool, connect_pool
from relay.db import identity
from relay.settings import NetworkSettings, NodeSettings, load


class _ExportSettings(NetworkSettings, NodeSettings):
    """The node-wide settings and where its API is reached (the port the pages announce)."""


async def _export(directory: Path) -> int:
    settings = load(_ExportSettings)
    pool = await connect_pool(
        settings.database_url, attempts=settings.connect_attempts, delay=1.0, max_size=2
    )

    def write(path: str, body: bytes) -> None:
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)

    try:
        key = await identity.wait(pool, attempts=1, delay=0.0)
        signer = Signer(key, settings.announced_port(), pages.NODE_TYPE_STATIC)
        return await build.export(
            pool, signer, now=int(time.time()), head_seconds=settings.head_seconds, write=write
        )
    finally:
        await close_pool(pool)


@click.command("export-static")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def export_static(directory: Path) -> None:
    """Write the node's head to DIRECTORY as a static Mim node."""
    written = asyncio.run(_export(directory))
    click.echo(f"{written} files written to {directory}")
