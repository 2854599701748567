"""Reading files of objects for the commands that take them (``submit``, ``fingerprint``).

A file holds JSON lines, a JSON array, or one JSON document; each item is a wrapper or a bare
object (:mod:`relay.wrapped`). ``-`` reads stdin. A file with a broken item is refused whole:
every broken item is named (up to ``SHOWN_REFUSALS``), then one ``error:`` line, exit 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import click

from mim.errors import MimError
from relay.cli.running import fail
from relay.wrapped import split, unwrap

__all__ = ["SHOWN_REFUSALS", "Items", "read_items"]

#: Broken items named one by one on stderr; more are counted.
SHOWN_REFUSALS: Final = 50

#: ``(where, kind, bytes)`` of each object: where names the file (when several) and the line.
Items = list[tuple[str, str, bytes]]


def _named(path: Path) -> str:
    return "stdin" if str(path) == "-" else str(path)


def read_items(files: Sequence[Path], kind: str | None, doing: str = "nothing was sent") -> Items:
    """Every item of ``files`` (bare objects of ``kind``, if given); every broken one named on
    stderr and exit 2 if there is any (``doing`` says what did not happen)."""
    items: Items = []
    broken: list[str] = []
    for path in files:
        try:
            raw = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
        except OSError as exc:
            fail(f"cannot read {path}: {exc.strerror or exc}")
        prefix = f"{_named(path)} " if len(files) > 1 else ""
        try:
            pieces = split(raw)
        except MimError as exc:
            broken.append(f"{_named(path)}: {exc.reason}")
            continue
        for where, text in pieces:
            try:
                item = unwrap(text, kind)
            except MimError as exc:
                broken.append(f"{prefix}{where}: {exc.reason}")
                continue
            items.append((prefix + where, item.kind, item.body.encode("utf-8", "surrogateescape")))
    for line in broken[:SHOWN_REFUSALS]:
        click.echo(f"error: {line}", err=True)
    if broken:
        fail(f"{len(broken)} item(s) do not parse; {doing}")
    return items
