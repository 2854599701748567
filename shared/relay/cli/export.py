"""``mimrelay export-static DIR``: the node's head as plain files, a static Mim node (type 255).

Writes the same tree the gateway serves on its GET side (endpoint ``index.json`` files, cache,
index and manifest pages, all signed by the node key), so any web server serving ``DIR`` is
crawlable like the live gateway.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import click

from mim import pages
from relay import RelayError, caches
from relay.cli.local import database, find_node
from relay.cli.running import fail, node_options, run
from relay.db import identity
from relay.settings import NetworkSettings, NodeSettings, load


async def _export(settings: NodeSettings, network: NetworkSettings, directory: Path) -> int:
    async with database(settings, 2, read=True) as pool:
        key = await identity.wait(pool, attempts=1, delay=0.0)
        now = int(time.time())
        head = await caches.read_head(pool, now=now, head_days=network.network_head_days)
    tree = caches.build_tree(
        head,
        key,
        port=network.announced_port(),
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
@node_options
def export_static(directory: Path, data_dir: Path | None, verbose: int) -> None:
    """Write the node's head to DIRECTORY as a static Mim node."""
    settings = find_node(data_dir, verbose, "database")
    try:
        network = load(NetworkSettings)
    except RelayError as exc:
        fail(str(exc))
    written = run(_export(settings, network, directory))
    click.echo(f"{written} files written to {directory}")
