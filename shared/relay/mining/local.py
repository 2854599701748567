"""Searching for a proof in this process: in a thread, or in a worker of a process pool."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

import mim.errors
import mim.pow
from relay.cpu import CpuPool
from relay.mining.wire import CHUNK_ATTEMPTS, Mined, MiningError, MiningTimeout, Progress

LocalSearch = Callable[[str, int, float], Awaitable[Mined]]
"""The search ``mine`` falls back to, given (text, difficulty, timeout in seconds)."""


def _search_local(
    text: str, difficulty: int, deadline: float, progress: Progress | None
) -> tuple[str, int]:
    salt = mim.pow.make_salt(secrets.randbelow)
    started = time.monotonic()
    start = 0
    while True:
        counter, attempts = mim.pow.search(text, difficulty, salt, start, CHUNK_ATTEMPTS)
        done = start + attempts
        if counter is not None:
            return mim.pow.unsigned(difficulty, salt, counter), done
        if progress is not None:
            progress(done, time.monotonic() - started)
        if time.monotonic() >= deadline:
            detail = f"no proof of difficulty {difficulty} after {done} attempts"
            raise MiningTimeout("deadline_s", "miner.deadline", detail)
        start += CHUNK_ATTEMPTS


def _check_difficulty(difficulty: int) -> None:
    if not 1 <= difficulty <= mim.pow.MAX_DIFFICULTY:
        detail = f"{difficulty} is outside 1..{mim.pow.MAX_DIFFICULTY}"
        raise MiningError("difficulty", "request.difficulty", detail)


async def mine_local(
    text: str,
    difficulty: int,
    *,
    timeout: float,  # noqa: ASYNC109 (a deadline for the search thread, not for one await)
    progress: Progress | None = None,
) -> Mined:
    """Search in a thread of this process (one core); ``MiningTimeout`` after ``timeout``."""
    _check_difficulty(difficulty)
    deadline = time.monotonic() + timeout
    found, attempts = await asyncio.to_thread(_search_local, text, difficulty, deadline, progress)
    return Mined(found, attempts, "local")


def _search_in_worker(text: str, difficulty: int, timeout: float) -> tuple[str, int]:
    """The search in a pool worker: ``("", attempts)`` past the deadline (errors pickle badly)."""
    try:
        return _search_local(text, difficulty, time.monotonic() + timeout, None)
    except MiningTimeout:
        return "", 0


def in_pool(cpu: CpuPool) -> LocalSearch:
    """A ``local`` search for :func:`mine` that runs in a worker process of ``cpu``."""

    async def search(text: str, difficulty: int, timeout: float) -> Mined:  # noqa: ASYNC109
        _check_difficulty(difficulty)
        found, attempts = await cpu.run(_search_in_worker, text, difficulty, timeout)
        if not found:
            detail = f"no proof of difficulty {difficulty} in {timeout:.1f} s"
            raise MiningTimeout("deadline_s", "miner.deadline", detail)
        return Mined(found, attempts, "pool")

    return search
