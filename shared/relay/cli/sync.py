"""``mimrelay peers`` (the address table and per-remote cursors) and ``mimrelay sync HOST:PORT``.

``peers`` reads the node's database. ``sync`` asks a running syncer of the node to sync one remote
now (``relay.sync_request``), shows which stage it is in (a bar on stderr, on a terminal or with
``--progress``), and prints its summary; it exits 1 if the sync failed or no syncer answered, 2 if
HOST:PORT does not parse.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

import click

from mim import canonical
from mim.entities import Address
from relay.bus import Layout
from relay.cli.local import database, find_node, nats_client
from relay.cli.running import (
    REFUSED,
    USAGE_ERROR,
    Bar,
    fail,
    node_options,
    progress_option,
    run,
)
from relay.db import addresses, cursors
from relay.settings import NodeSettings
from relay.sync_request import STAGES, ask

#: How long ``mimrelay sync`` waits for the syncer's summary.
SYNC_WAIT_SECONDS: Final = 600.0
_ADDRESSES_SHOWN: Final = 1000


async def _peers(settings: NodeSettings) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    async with database(settings, read=True) as pool:
        stored = await addresses.recent(pool, limit=_ADDRESSES_SHOWN)
        known = await cursors.all_cursors(pool)
    listed = []
    for row in stored:
        address = canonical.loads(Address, row.body)
        listed.append(
            {
                "location": row.location,
                "sublocation": row.sublocation,
                "port": row.port,
                "type": address.type,
                "first_party": row.first_party,
                "client": address.client.name,
                "last_ping": row.last_ping,
                "last_sync": row.last_sync,
            }
        )
    shown = [{"node_id": c.node_id, "endpoint": c.endpoint, "checkin": c.checkin} for c in known]
    return listed, shown


@click.command("peers")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of tables.")
@node_options
def peers(as_json: bool, data_dir: Path | None, verbose: int) -> None:
    """List known addresses (newest first) and the sync cursors per remote node."""
    listed, shown = run(_peers(find_node(data_dir, verbose, "database")))
    if as_json:
        click.echo(json.dumps({"addresses": listed, "cursors": shown}, indent=2))
        return
    click.echo(f"{len(listed)} addresses")
    for a in listed:
        party = "first-party" if a["first_party"] else "third-party"
        where = f"{a['location']}:{a['port']}"
        if a["sublocation"]:
            where += f"/{a['sublocation']}"
        click.echo(
            f"  {where}"
            f"  type {a['type']}  {party}  last ping {a['last_ping']}  last sync {a['last_sync']}"
        )
    click.echo(f"{len(shown)} cursors")
    for c in shown:
        click.echo(f"  {str(c['node_id'])[:16]}…  {c['endpoint']:<12} {c['checkin']}")


async def _sync(settings: NodeSettings, target: str, show: bool | None) -> dict[str, Any]:
    shown = sys.stderr.isatty() if show is None else show  # a few stages: no length to wait for
    with Bar(len(STAGES), "syncing", shown) as bar:

        def step(stage: str) -> None:
            if stage in STAGES:
                bar.update(1, stage)

        async with nats_client(settings, "sync") as nc:
            layout = Layout.from_settings(settings)
            return await ask(nc, layout, target, wait_seconds=SYNC_WAIT_SECONDS, progress=step)


def _summary_line(summary: dict[str, Any]) -> str:
    objects, pages, held = summary["objects"], summary["pages"], summary["purgatory"]
    beyond = (
        f", {held.get('held', 0)} from beyond the event horizon"
        f" ({held.get('admitted', 0)} admitted, {held.get('dropped', 0)} dropped)"
        if held.get("held")
        else ""
    )
    return (
        f"{'ok' if summary['ok'] else 'failed: ' + str(summary['reason'])}"
        f"  node {str(summary['node_id'])[:16]}  type {summary['node_type']}"
        f"  {sum(pages.values())} requests, {summary['bytes']} bytes,"
        f" {summary['skipped_pages']} pages skipped, {sum(objects.values())} objects"
        f" {json.dumps(objects, sort_keys=True)}{beyond} in {summary['duration_s']} s"
    )


@click.command("sync")
@click.argument("target", metavar="HOST:PORT")
@progress_option
@node_options
def sync(target: str, progress: bool | None, data_dir: Path | None, verbose: int) -> None:
    """Sync with one remote now (HOST:PORT, [v6]:PORT or http(s)://HOST:PORT) and summarise."""
    summary = run(_sync(find_node(data_dir, verbose, "nats"), target, progress))
    if summary.get("usage"):
        fail(str(summary.get("error", "HOST:PORT does not parse")), USAGE_ERROR)
    click.echo(_summary_line(summary))
    if not summary["ok"]:
        raise SystemExit(REFUSED)
