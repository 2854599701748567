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
from relay.runner import close_pool, connect_pool
from relay.settings import load


async def _export(directory: Path) -> int:
    from services.gateway.settings import GatewaySettings  # noqa: PLC0415

    from services.gateway import caches, identity  # noqa: PLC0415 - heavy, only for this command

    settings = load(GatewaySettings)
    pool = await connect_pool(
        settings.database_url, attempts=settings.connect_attempts, delay=1.0, max_size=2
    )
    try:
        key = await identity.load_or_create(pool)
        now = int(time.time())
        head = await caches.read_head(pool, now=now, head_days=settings.network_head_days)
    finally:
        await close_pool(pool)
    tree = caches.build_tree(
        head,
        key,
        port=settings.public_port or settings.port,
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
