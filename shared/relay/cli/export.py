"""``mimrelay export-static DIR``: the node's head as plain files, a static Mim node (type 255).

Writes the head as the gateway serves its GET side (endpoint ``index.json`` files, cache, index
and manifest pages, all signed by the node key), one six-hour block per cache, so any web server
serving ``DIR`` is crawlable like the live gateway. One block is held in memory at a time.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from mim import pages
from relay import RelayError
from relay.caches import build
from relay.caches.files import Signer
from relay.cli.local import database, find_node
from relay.cli.running import fail, node_options, run
from relay.db import identity
from relay.settings import NetworkSettings, NodeSettings, load


async def _export(settings: NodeSettings, network: NetworkSettings, directory: Path) -> int:
    def write(path: str, body: bytes) -> None:
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)

    async with database(settings, 2, read=True) as pool:
        key = await identity.wait(pool, attempts=1, delay=0.0)
        signer = Signer(key, network.announced_port(), pages.NODE_TYPE_STATIC)
        return await build.export(
            pool, signer, now=int(time.time()), head_seconds=network.head_seconds, write=write
        )


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
