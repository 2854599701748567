"""``mimrelay export --jsonl FILE`` and ``mimrelay import FILE``: move stored objects as JSON lines.

``export`` writes every stored object (the ``objects`` table; addresses are not exported, peers
teach them again) as one wrapper line each, ``{"kind":"post","object":<canonical JSON>}``, the
wrapper ``mimrelay submit`` reads. The object is written byte for byte as stored, so the
fingerprint, signature and proofs still hold. The file is written beside its target and renamed
into place when complete, so an interrupted export never leaves a truncated FILE.

``import`` sends every line through ``relay.submit.submit`` into the ingest stream: the validators
check each object as if a peer had sent it, and the store applies its update rules, so nothing
unchecked enters. It reads the wrapper lines above (the object's bytes are sent exactly as
written) and, with ``--kind``, bare object lines. It does not wait for verdicts: watch the store's
counts (``mimrelay status``) and the rejected stream for those.

Connections come from the node settings (``MIM_DATABASE_URL`` for export; ``MIM_NATS_URL`` and
``MIM_STREAM_PREFIX`` for import). Exit codes: 0 done; 1 the node refused (unreachable, ingest
stream full for too long) or, for import, some lines were refused; 2 a usage or file error. A
message on stderr, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import click

from relay.bus import KINDS, Layout, StreamLimits, ensure_streams
from relay.cli.running import REFUSED, fail, node_settings, run
from relay.settings import NodeSettings

__all__ = ["ImportSummary", "export_jsonl", "import_jsonl", "parse_line", "wrapper_line"]

T = TypeVar("T")

#: Publishes in flight at once during an import.
IMPORT_WINDOW: Final = 64
#: Refused lines named one by one on stderr; more are counted.
SHOWN_REFUSALS: Final = 50

_PREFIX: Final = '{"kind":"'
_MIDDLE: Final = '","object":'


# --------------------------------------------------------------------------- the line format


def wrapper_line(kind: str, body: str) -> str:
    """One export line: ``body`` (canonical JSON) wrapped with its kind, without a newline."""
    return f"{_PREFIX}{kind}{_MIDDLE}{body}}}"


def parse_line(line: str, kind: str | None) -> tuple[str, bytes]:
    """``(kind, bytes to submit)`` of one import line; ``ValueError`` saying what is wrong."""
    text = line.strip()
    if text.startswith(_PREFIX) and text.endswith("}"):
        named, sep, body = text[len(_PREFIX) : -1].partition(_MIDDLE)
        if sep and named in KINDS and _is_object(body):
            return named, body.encode("utf-8", "surrogateescape")  # exactly as exported
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise ValueError("not JSON (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if set(doc) == {"kind", "object"}:
        named = doc["kind"]
        if not isinstance(named, str) or named.lower() not in KINDS:
            raise ValueError(f"`kind` must be one of {', '.join(KINDS)}, not {named!r}")
        if not isinstance(doc["object"], dict):
            raise ValueError("`object` is not a JSON object")
        body = json.dumps(doc["object"], ensure_ascii=False, separators=(",", ":"))
        return named.lower(), body.encode()
    if kind is None:
        raise ValueError('no `--kind` given and not a {"kind", "object"} wrapper')
    return kind, text.encode("utf-8", "surrogateescape")


def _is_object(body: str) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):
        return False


# --------------------------------------------------------------------------- export


async def export_jsonl(database_url: str, out: IO[str], progress: Any = None) -> int:
    """Write every stored object to ``out`` as wrapper lines; return how many were written."""
    from relay.connect import close_pool, connect_pool  # noqa: PLC0415
    from relay.db import objects  # noqa: PLC0415 - asyncpg only for the commands that need it

    pool = await connect_pool(database_url, attempts=1, max_size=2)
    try:
        written = 0
        async for kind, body in objects.export_all(pool):
            out.write(wrapper_line(kind, body) + "\n")
            written += 1
            if progress is not None:
                progress.update(1)
        return written
    finally:
        await close_pool(pool)


async def _stored_objects(database_url: str) -> int:
    from relay.connect import close_pool, connect_pool  # noqa: PLC0415
    from relay.db import objects  # noqa: PLC0415

    pool = await connect_pool(database_url, attempts=1, max_size=1)
    try:
        counts = await objects.counts(pool)
    finally:
        await close_pool(pool)
    return sum(n for kind, n in counts.items() if kind != "address")


@click.command("export")
@click.option(
    "--jsonl",
    "target",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Where to write the JSON lines (`-` for stdout).",
)
def export(target: Path) -> None:
    """Write every stored object to a JSON-lines file, one canonical object per line."""
    settings = node_settings()
    total = run(_stored_objects(settings.read_url))
    to_stdout = str(target) == "-"
    partial = target.with_name(f".{target.name}.partial")
    try:
        out = sys.stdout if to_stdout else partial.open("w", encoding="utf-8", newline="\n")
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror or exc}")
    try:
        with click.progressbar(length=total, label="exporting", file=sys.stderr) as bar:
            written = run(export_jsonl(settings.read_url, out, bar))
    except BaseException:
        if not to_stdout:
            out.close()
            partial.unlink(missing_ok=True)
        raise
    if not to_stdout:
        out.flush()
        os.fsync(out.fileno())
        out.close()
        partial.replace(target)
    click.echo(f"exported {written} object(s) to {target}", err=to_stdout)


# --------------------------------------------------------------------------- import


@dataclass
class ImportSummary:
    """What an import did: objects queued, already queued, and lines refused (number, why)."""

    queued: int = 0
    duplicates: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)


def _lines(source: IO[bytes]) -> Iterator[tuple[int, int, str]]:
    """``(line number, bytes read, text)`` of each line of ``source``; blank lines as ``""``."""
    for number, raw in enumerate(source, 1):
        text = raw.decode("utf-8", "surrogateescape")
        yield number, len(raw), text if text.strip() else ""


async def import_jsonl(
    settings: NodeSettings,
    source: IO[bytes],
    kind: str | None,
    *,
    full_wait_seconds: float,
    progress: Any = None,
) -> ImportSummary:
    """Submit every line of ``source`` to the ingest stream, ``IMPORT_WINDOW`` at a time."""
    from relay.connect import close_nats, connect_nats  # noqa: PLC0415 - heavy, on demand

    summary = ImportSummary()
    nc = await connect_nats(settings.nats_url, "mimrelay-import", attempts=1)
    try:
        js = nc.jetstream()
        layout = Layout.from_settings(settings)
        await ensure_streams(js, layout, StreamLimits.from_settings(settings))
        batch: list[tuple[int, str, bytes]] = []
        for number, size, text in _lines(source):
            if progress is not None:
                progress.update(size)
            if not text:
                continue
            try:
                item_kind, body = parse_line(text, kind)
            except ValueError as exc:
                summary.refused.append((number, str(exc)))
                continue
            batch.append((number, item_kind, body))
            if len(batch) >= IMPORT_WINDOW:
                await _send(js, layout, batch, summary, full_wait_seconds)
                batch = []
        await _send(js, layout, batch, summary, full_wait_seconds)
        return summary
    finally:
        await close_nats(nc)


async def _send(
    js: Any,
    layout: Layout,
    batch: list[tuple[int, str, bytes]],
    summary: ImportSummary,
    full_wait_seconds: float,
) -> None:
    results = await asyncio.gather(
        *(_submit_one(js, layout, n, kind, body, full_wait_seconds) for n, kind, body in batch)
    )
    for (number, _, _), result in zip(batch, results, strict=True):
        if isinstance(result, str):
            summary.refused.append((number, result))
        elif result:
            summary.duplicates += 1
        else:
            summary.queued += 1


async def _submit_one(
    js: Any, layout: Layout, number: int, kind: str, body: bytes, full_wait_seconds: float
) -> bool | str:
    """True if already queued, False if queued now, or why the bus refused it for good."""
    from relay import BusError  # noqa: PLC0415
    from relay.submit import IngestFull, submit  # noqa: PLC0415

    deadline = time.monotonic() + full_wait_seconds
    pause = 0.2
    while True:
        try:
            ack = await submit(js, layout, kind, body, source="local")
        except IngestFull as exc:
            if time.monotonic() + pause > deadline:
                raise IngestFull(
                    f"line {number}: the ingest stream stayed full for {full_wait_seconds:g} s;"
                    " the lines before it were queued, run the import again to finish"
                ) from exc
            await asyncio.sleep(pause)  # the validators are draining it; try again
            pause = min(pause * 2, 5.0)
            continue
        except BusError as exc:
            return f"the bus refused it: {exc}"
        return bool(ack.duplicate)


@click.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--kind", "-k", type=click.Choice(list(KINDS)), help="Kind of bare object lines.")
@click.option(
    "--full-wait",
    "full_wait_seconds",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="Seconds to keep retrying while the ingest stream is full before giving up.",
)
def import_(file: Path, kind: str | None, full_wait_seconds: float) -> None:
    """Send the objects in a JSON-lines FILE through the validators into the store."""
    settings = node_settings()
    try:
        source = sys.stdin.buffer if str(file) == "-" else file.open("rb")
        size = 0 if str(file) == "-" else file.stat().st_size
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror or exc}")
    with source, click.progressbar(length=size, label="importing", file=sys.stderr) as bar:
        summary = run(
            import_jsonl(settings, source, kind, full_wait_seconds=full_wait_seconds, progress=bar)
        )
    for number, why in summary.refused[:SHOWN_REFUSALS]:
        click.echo(f"line {number}: refused: {why}", err=True)
    if len(summary.refused) > SHOWN_REFUSALS:
        click.echo(f"... and {len(summary.refused) - SHOWN_REFUSALS} more refused", err=True)
    click.echo(
        f"queued {summary.queued} object(s), {summary.duplicates} already queued, "
        f"{len(summary.refused)} line(s) refused"
    )
    if summary.refused:
        sys.exit(REFUSED)
