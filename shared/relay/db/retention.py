"""Retention (PROTOCOL.md §20.6): forgetting what fell out of the memory window. Writer: the store.

The event horizon is the start of the memory window, never inside the network head. The store
runs :func:`collect` on a timer; the syncer reads :func:`memory_cutoff` to hold back what a sync
would otherwise pull again right after it was forgotten.
"""

from __future__ import annotations

from typing import Final

from relay import settings
from relay.db import Db

__all__ = ["WRITER", "WRITES", "collect", "memory_cutoff"]

#: The one service that deletes from ``objects`` and ``board_owners``.
WRITER: Final = "store"
#: The functions here that write; only the writer's code may call them.
WRITES: Final = ("collect",)


def memory_cutoff(now: int, memory_days: int, head_days: int) -> int:
    """The event horizon: the start of the memory window, never inside the network head."""
    return now - max(memory_days, head_days) * settings.DAY_SECONDS


async def collect(db: Db, now: int, memory_days: int, head_days: int) -> dict[str, int]:
    """Forget objects last referenced before the event horizon; removed counts per kind.

    Nothing inside the network head is ever removed, whatever ``memory_days`` says.
    """
    rows = await db.fetch(
        "WITH gone AS (DELETE FROM objects WHERE last_referenced < $1 RETURNING kind, fingerprint),"
        " owners AS (DELETE FROM board_owners WHERE board IN"
        "   (SELECT fingerprint FROM gone WHERE kind = 'board'))"
        " SELECT kind, count(*) AS n FROM gone GROUP BY kind",
        memory_cutoff(now, memory_days, head_days),
    )
    return {r["kind"]: int(r["n"]) for r in rows}
