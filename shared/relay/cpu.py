"""CPU-bound work off the event loop: a bounded pool of worker processes (proof-of-work minting)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Final, TypeVar, TypeVarTuple

__all__ = ["PARENT_WATCH_SECONDS", "CpuPool", "pool_worker_init"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")

#: How often a pool worker checks that the process that started it is still there.
PARENT_WATCH_SECONDS: Final = 0.2


def pool_worker_init(parent: int) -> None:
    """Initializer of every worker process: ignore SIGINT, and exit once ``parent`` is gone.

    A worker blocks on a queue whose both ends it holds, so it would never notice its service being
    killed with -9 and would linger, holding the service's stdout; the watchdog thread ends it
    within ``PARENT_WATCH_SECONDS`` instead.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_WATCH_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class CpuPool:
    """A bounded process pool for CPU-bound work (PoW minting).

    Workers are started with ``spawn`` (never forked from a process running threads and an event
    loop), ignore SIGINT so Ctrl-C reaches only the service, and exit by themselves when the
    service is gone (:func:`pool_worker_init`). At most ``max_pending`` calls are submitted at
    once; further callers wait their turn. ``fn`` and its arguments must pickle.
    """

    def __init__(self, workers: int = 0, *, max_pending: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.max_pending = max_pending or 2 * self.workers
        self._slots = asyncio.Semaphore(self.max_pending)
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None

    def _ensure(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=pool_worker_init,
                initargs=(os.getpid(),),
            )
        return self._executor

    async def run(self, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
        """Run ``fn(*args)`` in a worker process and return its result."""
        async with self._slots:
            future = self._ensure().submit(fn, *args)
            return await asyncio.wrap_future(future)

    async def warm(self, fn: Callable[[*_Ts], object], *args: *_Ts) -> None:
        """Start every worker now by running ``fn(*args)`` once per worker, all at once.

        The executor starts a worker per call while none is idle, so ``workers`` concurrent calls
        start them all; ``fn`` should take a moment (and import what the real work needs), so
        one worker does not take every call. Otherwise the first real batch pays for starting
        interpreters and importing modules.
        """
        await asyncio.gather(*(self.run(fn, *args) for _ in range(self.workers)))

    async def aclose(self, wait_seconds: float = 5.0) -> None:
        """Cancel queued calls, let running ones finish for ``wait_seconds``, then kill workers."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # The executor has no public way to stop a running call; kill stuck workers directly.
        processes = list(getattr(executor, "_processes", {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + wait_seconds

        def join() -> None:
            for process in processes:
                process.join(max(0.0, deadline - time.monotonic()))
            for process in processes:
                if process.is_alive():
                    process.kill()
                    process.join()
            executor.shutdown(wait=True)

        await asyncio.to_thread(join)
