"""``mimrelay export --jsonl FILE``: every stored object as JSON lines, to import anywhere.

Every stored object (the ``objects`` table; addresses are not exported, peers teach them again)
becomes one wrapper line, ``{"kind":"post","object":<canonical JSON>}`` (:func:`relay.wrapped.wrap`,
what ``mimrelay import`` and ``submit`` read). The object is written byte for byte as stored, so
its fingerprint, signature and proofs still hold. The file is written beside its target and
renamed into place when complete, so an interrupted export never leaves a truncated FILE.

Exit codes: 0 done; 1 the node could not be reached; 2 a usage or file error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO

import click

from relay.cli.local import database, find_node
from relay.cli.running import Bar, fail, node_options, progress_option, run
from relay.db import objects
from relay.settings import NodeSettings
from relay.wrapped import wrap

__all__ = ["export", "export_jsonl"]


async def export_jsonl(settings: NodeSettings, out: IO[str], show: bool | None) -> int:
    """Write every stored object to ``out`` as wrapper lines; return how many were written."""
    async with database(settings, 2, read=True) as pool:
        counts = await objects.counts(pool)
        total = sum(n for kind, n in counts.items() if kind != "address")
        written = 0
        with Bar(total, "exporting", show) as bar:
            async for kind, body in objects.export_all(pool):
                out.write(wrap(kind, body) + "\n")
                written += 1
                bar.update()
    return written


@click.command("export")
@click.option(
    "--jsonl",
    "target",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Where to write the JSON lines (`-` for stdout).",
)
@progress_option
@node_options
def export(target: Path, progress: bool | None, data_dir: Path | None, verbose: int) -> None:
    """Write every stored object to a JSON-lines file, one canonical object per line."""
    settings = find_node(data_dir, verbose, "database")
    to_stdout = str(target) == "-"
    partial = target.with_name(f".{target.name}.partial")
    try:
        out = sys.stdout if to_stdout else partial.open("w", encoding="utf-8", newline="\n")
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror or exc}")
    try:
        written = run(export_jsonl(settings, out, progress))
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
