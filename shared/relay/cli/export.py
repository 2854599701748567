"""``mimrelay export-static DIR``: the node's head as plain files, a static Mim node (type 255).

Writes the same tree the gateway serves on its GET side (endpoint ``index.json`` files, cache,
index and manifest pages, all signed by the node key), so any web server serving ``DIR`` is
crawlable like the live gateway.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import click

from mim import pages
from relay import caches
from relay.connect import close_pool, connect_pool
from relay.db import identity
from relay.settings import NetworkSettings, NodeSettings, load


class _ExportSettings(NetworkSettings, NodeSettings):
    """The node-wide settings and where its API is reached (the port the pages announce)."""


async def _export(directory: Path) -> int:
    settings = load(_ExportSettings)
    pool = await connect_pool(
        settings.read_url, attempts=settings.connect_attempts, delay=1.0, max_size=2
    )
    try:
        key = await identity.wait(pool, attempts=1, delay=0.0)
        now = int(time.time())
        head = await caches.read_head(pool, now=now, head_days=settings.network_head_days)
    finally:
        await close_pool(pool)
    tree = caches.build_tree(
        head,
        key,
        port=settings.announced_port(),
        node_type=pages.NODE_TYPE_STATIC,
        nonce=secrets.token_hex(32),
        compress=False,
    )
    for path, body in tree.files.items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    return len(tree.files)


@click.command("export-static")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def export_static(directory: Path) -> None:
    """Write the node's head to DIRECTORY as a static Mim node."""
    written = asyncio.run(_export(directory))
    click.echo(f"{written} files written to {directory}")
