"""The miner's search processes: the shared CPU pool, running ``mim.pow.search``.

Workers come from ``relay.cpu.CpuPool``: spawned, deaf to SIGINT, and gone within
``PARENT_WATCH_SECONDS`` of a miner killed with -9 (never left searching on their own).
"""

from __future__ import annotations

import mim.pow
from relay.cpu import CpuPool

__all__ = ["SearchPool"]


class SearchPool(CpuPool):
    """``workers`` processes running ``mim.pow.search``; at most ``2 * workers`` calls queued."""

    async def search(
        self, text: str, difficulty: int, salt: str, start: int, limit: int
    ) -> tuple[int | None, int]:
        """``mim.pow.search`` in a worker process."""
        return await self.run(mim.pow.search, text, difficulty, salt, start, limit)

    async def warm_up(self) -> None:
        """Start every worker and import the search in it, before the first job pays for that."""
        await self.warm(mim.pow.search, "", 1, "warm", 0, 1)
