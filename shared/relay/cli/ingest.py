"""``mimrelay block | unblock | blocks``: the node's block list; and the submit file format.

``mimrelay submit FILE`` (:mod:`relay.cli.tokens`, through the gateway) reads FILE with
:func:`split_objects`; FILE holds, in any mix per line:

- one JSON object, or a JSON array of objects, of the kind given by ``--kind``;
- JSON lines, one object per line (what ``mimrelay create`` prints);
- wrappers ``{"kind": "post", "object": {...}}``, which name their own kind, so one file may
  mix kinds; ``--kind`` is then not needed. A wrapped object is re-encoded compactly by the
  standard JSON encoder (key order kept); bare objects are sent byte for byte.

``block FINGERPRINT --reason TEXT`` / ``unblock FINGERPRINT`` ask the node's store to change the
block list (it keeps the ``blocks`` table and the validators' bucket); ``blocks`` prints it
(``--json`` for JSON lines, ``--sync`` first has the store rewrite the bucket from the table).

Connections come from the node settings (``MIM_NATS_URL``, ``MIM_STREAM_PREFIX``). Exit codes:
0 done, 1 the node refused (ingest full, bus down, no store answering), 2 a usage, file or input
error; a message on stderr, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from relay import blocks as blocks_api
from relay.bus import KINDS, Layout
from relay.cli.running import fail, node_settings, run
from relay.settings import NodeSettings

T = TypeVar("T")

KIND = click.Choice(list(KINDS), case_sensitive=False)


def _run(work: Callable[[NodeSettings], Coroutine[Any, Any, T]]) -> T:
    return run(work(node_settings()))


# --------------------------------------------------------------------------- reading files


def _elements(text: str) -> list[str]:
    """The raw text of each element of the JSON array ``text``, exactly as written."""
    decoder = json.JSONDecoder()
    out: list[str] = []
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return out
        _, end = decoder.raw_decode(text, pos)
        out.append(text[pos:end])
        pos = end


def split_objects(raw: bytes, kind: str | None) -> list[tuple[str, bytes]]:
    """``(kind, bytes)`` of every object in a submit file; ``ValueError`` naming the line."""
    text = raw.decode("utf-8", "surrogateescape")
    stripped = text.strip()
    if not stripped:
        return []
    if stripped.startswith("["):
        try:
            pieces = _elements(stripped)
        except ValueError as exc:
            raise ValueError(f"the array does not parse as JSON: {exc}") from None
        return [_one(p, kind, f"element {n}") for n, p in enumerate(pieces, 1)]
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if len(lines) > 1 and all(line.lstrip().startswith("{") for _, line in lines):
        return [_one(line.strip(), kind, f"line {n}") for n, line in lines]
    return [_one(stripped, kind, "the document")]


def _one(piece: str, kind: str | None, where: str) -> tuple[str, bytes]:
    try:
        doc = json.loads(piece)
    except ValueError:
        doc = None  # sent as is: the validator records why it is not an object
    if isinstance(doc, dict) and set(doc) == {"kind", "object"}:
        named = doc["kind"]
        if not isinstance(named, str) or named.lower() not in KINDS:
            raise ValueError(f"{where}: `kind` must be one of {', '.join(KINDS)}, not {named!r}")
        body = json.dumps(doc["object"], ensure_ascii=False, separators=(",", ":"))
        return named.lower(), body.encode()
    if kind is None:
        raise ValueError(f'{where}: no `--kind` given and not a {{"kind", "object"}} wrapper')
    return kind, piece.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- commands


async def _ask_store(
    settings: NodeSettings, op: blocks_api.Op, target: str = "", reason: str = ""
) -> dict[str, Any]:
    """Ask the node's store to change or list the block list."""
    from relay.connect import close_nats, connect_nats  # noqa: PLC0415 - heavy, on demand

    nc = await connect_nats(settings.nats_url, "mimrelay-blocks", attempts=1)
    try:
        answer = await blocks_api.ask(
            nc, Layout.from_settings(settings), op, target=target, reason=reason
        )
    finally:
        await close_nats(nc)
    return dict(answer)


@click.command()
@click.argument("fingerprint")
@click.option("--reason", "-r", default="", help="Why, for the record and the rejections.")
def block(fingerprint: str, reason: str) -> None:
    """Refuse FINGERPRINT (a key, board, thread, post, ... or an address host) and all under it."""
    try:
        name = blocks_api.normalise(fingerprint)
    except ValueError as exc:
        fail(str(exc))
    answer = _run(lambda s: _ask_store(s, "add", target=name, reason=reason))
    click.echo(f"{'blocked' if answer['changed'] else 'already blocked, reason updated:'} {name}")


@click.command()
@click.argument("fingerprint")
def unblock(fingerprint: str) -> None:
    """Accept FINGERPRINT again (objects refused before must be sent again)."""
    try:
        name = blocks_api.normalise(fingerprint)
    except ValueError as exc:
        fail(str(exc))
    answer = _run(lambda s: _ask_store(s, "remove", target=name))
    click.echo(f"{'unblocked' if answer['changed'] else 'was not blocked:'} {name}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--sync", is_flag=True, help="First rewrite the validators' bucket from the table.")
def blocks(as_json: bool, sync: bool) -> None:
    """List the block list."""
    answer = _run(lambda s: _ask_store(s, "sync" if sync else "list"))
    rows = answer["blocks"]
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
