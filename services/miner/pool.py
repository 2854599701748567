"""The miner's search processes: a process pool whose workers never outlive the miner.

``relay.runner.CpuPool`` workers block on a queue whose both ends they hold, so a service killed
with -9 leaves them behind (holding its stdout, and for a miner maybe mid-search). Here each worker
also runs a watchdog thread that exits the process once its parent is gone; a killed miner's
search processes stop within ``_WATCH_SECONDS``. Workers are spawned (never forked from a process
with threads and an event loop) and ignore SIGINT, so Ctrl-C reaches only the miner.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import signal
import threading
import time
from typing import Final

import mim.pow

__all__ = ["SearchPool"]

_WATCH_SECONDS: Final = 0.2


def _watch_parent(parent: int) -> None:
    """Worker initializer: ignore SIGINT, and exit as soon as ``parent`` is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_WATCH_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class SearchPool:
    """``workers`` processes running ``mim.pow.search``; at most ``2 * workers`` calls queued."""

    def __init__(self, workers: int) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._slots = asyncio.Semaphore(2 * self.workers)
        self._executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_watch_parent,
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
