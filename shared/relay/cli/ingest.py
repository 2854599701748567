"""``mimrelay submit FILE...`` and ``mimrelay import FILE``: objects into the node's validators.

Both read items through :mod:`relay.wrapped`, the parser ``POST /api/submit`` uses: wrappers
``{"kind": "post", "object": {...}}`` and bare objects, mixed in any order. A bare object is of the
kind its fields name (``--kind`` forces one); a wrapper names its own. Lines end at LF only.

``submit`` reads JSON lines, a JSON array, or one JSON document, and sends nothing when an item is
broken (each is named, exit 2). It goes through the gateway's local API (:mod:`relay.cli.api`,
:mod:`relay.cli.receipts`), which judges each object as the validators will and queues the valid
ones, as the operator; ``--api URL`` with a token (``--token-file FILE`` or ``MIM_API_TOKEN``)
submits on a node's public listener. Without ``--wait`` it names each rejected object on stderr
and prints how many were queued. ``import`` streams JSON lines (what ``mimrelay export`` writes)
straight onto the ingest stream, byte for byte, names the broken lines and sends the rest.

With ``--wait`` both follow each object until the store holds it or it is refused (by the gateway
or a validator; ``relay.cli.follow``) and print one line per object, in order: ``stored``,
``rejected`` with the stage and the reason, or ``pending`` when ``--timeout`` ran out; the exit
status is 0 only if every object was stored. It follows them through the servers of the node of
this machine, so ``submit --wait --api URL`` first checks that URL is that node (its recorded or
configured API, else the same key on ``GET /v0/node``), and exits 2 before sending if not.

Exit codes: 0 done; 1 the node refused or could not be reached, an object was rejected, a line was
refused (import), or with ``--wait`` not everything was stored; 2 a usage, file or input error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Final

import click

from mim.entities import KINDS
from mim.errors import MimError
from relay.bus import Layout, StreamLimits, ensure_streams
from relay.cli.api import API, call, local_api, own_apis
from relay.cli.feed import Fed, Sent, feed
from relay.cli.files import SHOWN_REFUSALS, read_items
from relay.cli.follow import Outcome, follow
from relay.cli.local import database, find_node, nats_client
from relay.cli.receipts import send
from relay.cli.running import (
    PROGRESS_MIN,
    REFUSED,
    Bar,
    fail,
    node_options,
    progress_option,
    run,
)
from relay.db import identity
from relay.settings import NodeSettings
from relay.wrapped import unwrap

#: An import file at least this large gets a progress bar (on a terminal): a few hundred objects.
PROGRESS_BYTES: Final = PROGRESS_MIN * 1024
#: Refusals of objects queued before are read back this far beyond the dedupe window.
_LOOK_BACK_MARGIN_SECONDS: Final = 60.0

KIND = click.Choice(list(KINDS), case_sensitive=False)

_kind = click.option(
    "--kind", "-k", type=KIND, help="Kind of the bare objects [the kind their fields name]."
)
_wait = click.option(
    "--wait", is_flag=True, help="Follow each object until stored or rejected; exit 1 unless all"
    " were stored.",
)  # fmt: skip
_timeout = click.option(
    "--timeout", type=click.FloatRange(min=0), default=300.0, show_default=True,
    help="With --wait: seconds to wait for the outcomes.",
)  # fmt: skip
_full_wait = click.option(
    "--full-wait", "full_wait_seconds", type=click.FloatRange(min=0), default=120.0,
    show_default=True, help="Seconds to keep retrying while the ingest stream is full.",
)  # fmt: skip
_files = click.Path(dir_okay=False, allow_dash=True, path_type=Path)


def _report(timeout: float) -> Callable[[Sent, Outcome], None]:
    def report(one: Sent, outcome: Outcome) -> None:
        line = f"{outcome.word:<9} {one.kind:<11} {one.name or '(' + one.where + ')'}"
        if outcome.word == "rejected":
            line += f"  {outcome.stage}: {outcome.reason}"
        elif outcome.word == "pending":
            line += f"  not stored within {timeout:g} s"
        click.echo(line)

    return report


async def _follow(
    settings: NodeSettings, fed: Fed, wait_seconds: float, layout: Layout | None = None
) -> list[Outcome]:
    """Follow every object ``fed`` sent until stored or rejected, reporting each in order."""
    layout = layout or Layout.from_settings(settings)
    back = _LOOK_BACK_MARGIN_SECONDS
    if any(one.duplicate for one in fed.sent):
        back += settings.dedupe_window_seconds
    async with nats_client(settings, "follow") as nc, database(settings) as pool:
        return await follow(
            nc, pool, layout, fed.sent, timeout=wait_seconds, look_back_seconds=back,
            report=_report(wait_seconds),
        )  # fmt: skip


async def _same_node(settings: NodeSettings, api: str, headers: dict[str, str]) -> None:
    """Exit 2 unless the node answering at ``api`` is the one whose servers ``--wait`` follows:
    objects sent to another node are stored by that node, which these servers never see."""
    if api in own_apis(settings.data_dir):
        return
    answer = call("GET", f"{api}/v0/node", headers=headers)
    try:
        theirs = str(answer.json()["node_public_key"])
    except (ValueError, KeyError, TypeError):
        fail(f"{api}/v0/node did not answer with a node page ({answer.status_code})", REFUSED)
    async with database(settings, read=True) as pool:
        key = await identity.load(pool)
    ours = key.public_hex if key is not None else ""
    if theirs != ours:
        fail(
            f"--wait follows objects through the node in {settings.data_dir}, and {api} is"
            f" another node (its key {theirs[:16]}…, ours {ours[:16] or 'none'}…): submit there"
            " without --wait, or from that node's own machine"
        )


async def _import(
    settings: NodeSettings,
    items: Iterator[tuple[str, str, bytes]],
    *,
    full_wait_seconds: float,
    wait: bool,
    wait_seconds: float,
    bar: Bar,
) -> tuple[Fed, list[Outcome]]:
    """Send ``items`` onto the ingest stream, then, with ``wait``, follow them until stored or
    rejected; ``bar`` is moved on by whoever reads ``items``."""
    layout = Layout.from_settings(settings)
    async with nats_client(settings, "import") as nc:
        js = nc.jetstream()
        await ensure_streams(js, layout, StreamLimits.from_settings(settings))
        with bar:
            fed = await feed(
                js, layout, items, source="local", full_wait_seconds=full_wait_seconds, keep=wait
            )
    if not wait or not fed.sent:
        return fed, []
    return fed, await _follow(settings, fed, wait_seconds, layout)


def _finish(fed: Fed, outcomes: list[Outcome], wait: bool, timeout: float, import_: bool) -> None:
    for where, why in fed.refused[:SHOWN_REFUSALS]:
        click.echo(f"{where}: refused: {why}", err=True)
    if len(fed.refused) > SHOWN_REFUSALS:
        click.echo(f"... and {len(fed.refused) - SHOWN_REFUSALS} more refused", err=True)
    if not wait:
        for one in fed.rejected[:SHOWN_REFUSALS]:
            stage, reason = one.refused or ("", "")
            click.echo(f"rejected {one.where} ({one.kind}): {stage}: {reason}", err=True)
        if len(fed.rejected) > SHOWN_REFUSALS:
            click.echo(f"... and {len(fed.rejected) - SHOWN_REFUSALS} more rejected", err=True)
    if wait:
        counts = {word: sum(o.word == word for o in outcomes) for word in ("stored", "rejected")}
        pending = len(outcomes) - sum(counts.values())
        summary = f"{counts['stored']} stored, {counts['rejected']} rejected"
        click.echo(summary + (f", {pending} not stored within {timeout:g} s" if pending else ""))
    else:
        refused = (
            f"{len(fed.refused)} line(s) refused" if import_ else f"{len(fed.rejected)} rejected"
        )
        click.echo(f"queued {fed.queued} object(s), {fed.duplicates} already queued, {refused}")
    all_stored = all(o.word == "stored" for o in outcomes)
    if fed.refused or fed.rejected or not all_stored:
        sys.exit(REFUSED)


def _authorization(token_file: Path | None) -> dict[str, str]:
    """The bearer header of the token in ``token_file``, else of ``MIM_API_TOKEN``, if any."""
    token = os.environ.get("MIM_API_TOKEN") or None
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"cannot read {token_file}: {exc.strerror or exc}")
    return {"Authorization": f"Bearer {token}"} if token else {}


@click.command()
@click.argument("files", nargs=-1, required=True, type=_files)
@_kind
@_wait
@_timeout
@_full_wait
@API
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A file holding a token, for a public listener [MIM_API_TOKEN].",
)
@progress_option
@node_options
def submit(
    files: tuple[Path, ...],
    kind: str | None,
    wait: bool,
    timeout: float,
    full_wait_seconds: float,
    api: str | None,
    token_file: Path | None,
    progress: bool | None,
    data_dir: Path | None,
    verbose: int,
) -> None:
    """Submit the objects in FILES (- for stdin) through the node's local API."""
    items = read_items(files, kind.lower() if kind else None)
    headers = _authorization(token_file)
    url = f"{local_api(api, data_dir, verbose)}/api/submit"
    settings = find_node(data_dir, verbose, "nats", "database") if wait else None
    if settings is not None and api:
        run(_same_node(settings, url.removesuffix("/api/submit"), headers))
    with Bar(len(items), "queueing", progress) as bar:
        fed = send(url, items, headers=headers, full_wait_seconds=full_wait_seconds, bar=bar)
    outcomes = run(_follow(settings, fed, timeout)) if settings is not None and fed.sent else []
    _finish(fed, outcomes, wait, timeout, import_=False)


def _lines(
    source: IO[bytes], kind: str | None, bar: Bar, broken: list[tuple[str, str]]
) -> Iterator[tuple[str, str, bytes]]:
    """The items of a JSON-lines file, read as they are sent; broken lines go to ``broken``."""
    for number, raw in enumerate(source, 1):
        bar.update(len(raw))
        text = raw.decode("utf-8", "surrogateescape")
        if not text.strip(" \t\r\n"):
            continue
        try:
            item = unwrap(text, kind)
        except MimError as exc:
            broken.append((f"line {number}", exc.reason))
            continue
        yield f"line {number}", item.kind, item.body.encode("utf-8", "surrogateescape")


@click.command("import")
@click.argument("file", type=_files)
@_kind
@_wait
@_timeout
@_full_wait
@progress_option
@node_options
def import_(
    file: Path,
    kind: str | None,
    wait: bool,
    timeout: float,
    full_wait_seconds: float,
    progress: bool | None,
    data_dir: Path | None,
    verbose: int,
) -> None:
    """Send the objects of a JSON-lines FILE (as `mimrelay export` writes) to the validators."""
    try:
        source = sys.stdin.buffer if str(file) == "-" else file.open("rb")
        size = 0 if str(file) == "-" else file.stat().st_size
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    settings = find_node(data_dir, verbose, "nats", *(("database",) if wait else ()))
    show = progress if progress is not None else (sys.stderr.isatty() and size >= PROGRESS_BYTES)
    bar = Bar(size, "importing", show, unit=" bytes")
    broken: list[tuple[str, str]] = []
    with source:
        fed, outcomes = run(
            _import(
                settings, _lines(source, kind.lower() if kind else None, bar, broken),
                full_wait_seconds=full_wait_seconds, wait=wait, wait_seconds=timeout, bar=bar,
            )
        )  # fmt: skip
    fed.refused[:0] = broken
    _finish(fed, outcomes, wait, timeout, import_=True)
