"""What several benches share: the repository root and a bulk loader for the ``objects`` table."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import asyncpg

from mim.entities import Provable
from services.store import persist

REPO: Final = Path(__file__).resolve().parents[1]

#: The columns ``copy_rows`` fills: the store's row, then arrival and last reference.
COLUMNS: Final = (
    *(f.name for f in dataclasses.fields(persist.ObjectRow)),
    "local_arrival",
    "last_referenced",
)


async def copy_rows(url: str, objects: Sequence[Provable], when: int) -> None:
    """COPY ``objects`` into ``objects``, arrived and last referenced at ``when``, then ANALYZE.

    Much faster than the store's upserts, for filling a node before it is measured; the rows are
    the store's own (``persist.row_of``).
    """
    records = [(*dataclasses.astuple(persist.row_of(o)), when, when) for o in objects]
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table("objects", records=records, columns=COLUMNS)
        await conn.execute("ANALYZE objects")
    finally:
        await conn.close()
