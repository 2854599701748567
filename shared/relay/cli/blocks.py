"""``mimrelay block | unblock | blocks``: the operator's block list, kept by the node's store.

``block FINGERPRINT --reason TEXT`` and ``unblock FINGERPRINT`` ask the store to change the list
(it keeps the ``blocks`` table and the validators' bucket, ``relay.blocks``); ``blocks`` prints
it (``--json`` for JSON lines; ``--sync`` first has the store rewrite the bucket from the table).
A block refuses what arrives from then on: the key, board, thread, post... it names and all under
it, at the validators' ``blocked`` stage; what is stored already stays.

Exit codes: 0 done, 1 the node could not be reached or no store answered, 2 a usage error.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from relay import blocks as blocks_api
from relay.bus import Layout
from relay.cli.local import find_node, nats_client
from relay.cli.running import fail, node_options, run
from relay.settings import NodeSettings


async def _ask(
    settings: NodeSettings, op: blocks_api.Op, target: str = "", reason: str = ""
) -> dict[str, Any]:
    """Ask the node's store to change or list the block list."""
    async with nats_client(settings, "blocks") as nc:
        layout = Layout.from_settings(settings)
        answer = await blocks_api.ask(nc, layout, op, target=target, reason=reason)
    return dict(answer)


def _target(fingerprint: str) -> str:
    try:
        return blocks_api.normalise(fingerprint)
    except ValueError as exc:
        fail(str(exc))


@click.command()
@click.argument("fingerprint")
@click.option("--reason", "-r", default="", help="Why, for the record and the rejections.")
@node_options
def block(fingerprint: str, reason: str, data_dir: Path | None, verbose: int) -> None:
    """Refuse FINGERPRINT (a key, board, thread, post, ... or an address host) and all under it."""
    name = _target(fingerprint)
    settings = find_node(data_dir, verbose, "nats")
    answer = run(_ask(settings, "add", target=name, reason=reason))
    click.echo(f"{'blocked' if answer['changed'] else 'already blocked, reason updated:'} {name}")


@click.command()
@click.argument("fingerprint")
@node_options
def unblock(fingerprint: str, data_dir: Path | None, verbose: int) -> None:
    """Accept FINGERPRINT again (objects refused before must be sent again)."""
    name = _target(fingerprint)
    settings = find_node(data_dir, verbose, "nats")
    answer = run(_ask(settings, "remove", target=name))
    click.echo(f"{'unblocked' if answer['changed'] else 'was not blocked:'} {name}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--sync", is_flag=True, help="First rewrite the validators' bucket from the table.")
@node_options
def blocks(as_json: bool, sync: bool, data_dir: Path | None, verbose: int) -> None:
    """List the block list."""
    settings = find_node(data_dir, verbose, "nats")
    rows = run(_ask(settings, "sync" if sync else "list"))["blocks"]
    if as_json:
        for b in rows:
            click.echo(json.dumps({"fingerprint": b["fingerprint"], "reason": b["reason"],
                                   "created_at": _when(b["created_at"])}))  # fmt: skip
        return
    width = max([len("FINGERPRINT"), *(len(b["fingerprint"]) for b in rows)])
    click.echo(f"{'FINGERPRINT':<{width}}  {'BLOCKED AT (UTC)':<19}  REASON")
    for b in rows:
        click.echo(f"{b['fingerprint']:<{width}}  {_when(b['created_at'])[:19]:<19}  {b['reason']}")
    click.echo(f"{len(rows)} blocked", err=True)


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()
