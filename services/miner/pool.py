"""The miner's search processes: a process pool whose workers never outlive the miner.

Workers share ``relay.runner``'s initializer: spawned, deaf to SIGINT, and gone within
``PARENT_WATCH_SECONDS`` of a miner killed with -9 (never left searching on their own).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import time

import mim.pow
from relay.runner import pool_worker_init

__all__ = ["SearchPool"]


class SearchPool:
    """``workers`` processes running ``mim.pow.search``; at most ``2 * workers`` calls queued."""

    def __init__(self, workers: int) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._slots = asyncio.Semaphore(2 * self.workers)
        self._executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=pool_worker_init,
            initargs=(os.getpid(),),
        )

    async def search(
        self, text: str, difficulty: int, salt: str, start: int, limit: int
    ) -> tuple[int | None, int]:
        """``mim.pow.search`` in a worker process."""
        async with self._slots:
            future = self._executor.submit(mim.pow.search, text, difficulty, salt, start, limit)
            return await asyncio.wrap_future(future)

    async def aclose(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (a join bound)
        """Drop queued calls, let running ones finish for ``timeout``, then kill the workers."""
        executor = self._executor
        processes = list(getattr(executor, "_processes", {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout

        def join() -> None:
            for process in processes:
                process.join(max(0.0, deadline - time.monotonic()))
            for process in processes:
                if process.is_alive():
                    process.kill()
                    process.join()
            executor.shutdown(wait=True)

        await asyncio.to_thread(join)
