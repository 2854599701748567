"""``mimrelay peers`` (the address table and per-remote cursors) and ``mimrelay sync HOST:PORT``.

``sync`` runs one sync now with the syncer's settings (``MIM_SYNCER_*``, ``MIM_*``), shows which
stage it is in, and prints a summary; it exits 1 if the sync failed.
"""

from __future__ import annotations

import asyncio
import json
import sys

import click

from mim import canonical
from mim.entities import Address
from relay import logging as relay_logging
from relay.runner import close_nats, close_pool, connect_nats, connect_pool
from relay.settings import load


async def _peers() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    from services.syncer.settings import SyncerSettings  # noqa: PLC0415

    from services.store import repo  # noqa: PLC0415 - heavy, only for this command

    settings = load(SyncerSettings)
    quiet = settings.model_copy(update={"log_level": "warning"})
    relay_logging.configure("cli", quiet, stream=sys.stderr)
    pool = await connect_pool(settings.database_url, attempts=settings.connect_attempts, delay=1.0)
    try:
        stored = await repo.list_addresses(pool, limit=settings.address_read_max)
        rows = await pool.fetch(
            "SELECT node_id, endpoint, checkin FROM sync_cursors ORDER BY node_id, endpoint"
        )
    finally:
        await close_pool(pool)
    addresses = []
    for row in stored:
        address = canonical.loads(Address, row.body)
        addresses.append(
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
    cursors = [dict(r) for r in rows]
    return addresses, cursors


@click.command("peers")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of tables.")
def peers(as_json: bool) -> None:
    """List known addresses (newest first) and the sync cursors per remote node."""
    addresses, cursors = asyncio.run(_peers())
    if as_json:
        click.echo(json.dumps({"addresses": addresses, "cursors": cursors}, indent=2))
        return
    click.echo(f"{len(addresses)} addresses")
    for a in addresses:
        party = "first-party" if a["first_party"] else "third-party"
        where = f"{a['location']}:{a['port']}"
        if a["sublocation"]:
            where += f"/{a['sublocation']}"
        click.echo(
            f"  {where}"
            f"  type {a['type']}  {party}  last ping {a['last_ping']}  last sync {a['last_sync']}"
        )
    click.echo(f"{len(cursors)} cursors")
    for c in cursors:
        click.echo(f"  {str(c['node_id'])[:16]}…  {c['endpoint']:<12} {c['checkin']}")


async def _sync(target: str) -> dict[str, object]:
    from services.syncer.__main__ import make_client  # noqa: PLC0415
    from services.syncer.peers import parse_remote  # noqa: PLC0415
    from services.syncer.settings import SyncerSettings  # noqa: PLC0415
    from services.syncer.sync import ENDPOINTS, Syncer  # noqa: PLC0415

    from relay.bus import Layout  # noqa: PLC0415
    from services.gateway import identity  # noqa: PLC0415 - heavy, only for this command

    settings = load(SyncerSettings)
    # stdout is the command's answer; library lines (warnings only) go to stderr
    quiet = settings.model_copy(update={"log_level": "warning"})
    relay_logging.configure("cli", quiet, stream=sys.stderr)
    remote = parse_remote(target)
    pool = await connect_pool(settings.database_url, attempts=settings.connect_attempts, delay=1.0)
    nc = await connect_nats(settings.nats_url, "mimrelay-sync", attempts=settings.connect_attempts)
    client = make_client(settings)
    stages = ["check", *ENDPOINTS]
    try:
        key = await identity.load_or_create(pool)
        syncer = Syncer(settings, client, pool, Layout.from_settings(settings), key, nc=nc)
        done = 0

        def step(stage: str) -> None:
            nonlocal done
            if stage not in stages:
                return
            done += 1
            filled = round(20 * done / len(stages))
            bar = "#" * filled + "-" * (20 - filled)
            click.echo(f"\r[{bar}] {done}/{len(stages)} {stage:<12}", nl=False, err=True)

        report = await syncer.sync(remote, progress=step)
        click.echo("", err=True)
    finally:
        await client.aclose()
        await close_nats(nc)
        await close_pool(pool)
    return report.summary()


@click.command("sync")
@click.argument("target", metavar="HOST:PORT")
def sync(target: str) -> None:
    """Sync with one remote now (HOST:PORT, [v6]:PORT or http(s)://HOST:PORT) and summarise."""
    try:
        summary = asyncio.run(_sync(target))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="HOST:PORT") from exc
    objects = summary["objects"]
    pages = summary["pages"]
    held = summary["purgatory"]
    assert isinstance(objects, dict) and isinstance(pages, dict) and isinstance(held, dict)
    beyond = (
        f", {held.get('held', 0)} from beyond the event horizon"
        f" ({held.get('admitted', 0)} admitted, {held.get('dropped', 0)} dropped)"
        if held.get("held")
        else ""
    )
    click.echo(
        f"{'ok' if summary['ok'] else 'failed: ' + str(summary['reason'])}"
        f"  node {str(summary['node_id'])[:16]}  type {summary['node_type']}"
        f"  {sum(pages.values())} requests, {summary['bytes']} bytes,"
        f" {summary['skipped_pages']} pages skipped, {sum(objects.values())} objects"
        f" {json.dumps(objects, sort_keys=True)}{beyond} in {summary['duration_s']} s"
    )
    if not summary["ok"]:
        raise SystemExit(1)
