"""Event-loop lag while the syncer builds POST requests with no miner answering.

    python bench/request_pow.py [--requests 30] [--rounds 3] [--difficulty 15]

Each round builds ``--requests`` request bodies with ``Syncer._post_body`` (sign, proof of work
at ``--difficulty``, sign the proof), once with the search in a thread (``mining.mine_local``, the
baseline: what ``mimrelay sync`` and a syncer without a pool do) and once in a worker of a
``CpuPool`` (what the syncer service does), while a task on the same loop sleeps 1 ms at a time
and records how late it wakes. Printed per mode: milliseconds per request body, and the loop's
median, p99 and largest lag over the rounds. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Any, cast

from services.syncer.settings import SyncerSettings
from services.syncer.sync import Syncer

from mim.signing import SigningKey
from relay.bus import Layout
from relay.cpu import CpuPool
from relay.settings import load

TICK = 0.001


async def _round(syncer: Syncer, requests: int) -> tuple[float, list[float]]:
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(TICK)
            lags.append(time.perf_counter() - started - TICK)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    for _ in range(requests):
        await syncer._post_body(())
    elapsed = time.perf_counter() - started
    done.set()
    await task
    return elapsed / requests, lags


async def main(requests: int, rounds: int, difficulty: int) -> None:
    settings = load(SyncerSettings, request_pow=difficulty)
    key = SigningKey.generate(bytes(range(32)))
    cpu = CpuPool(1)
    none = cast(Any, None)  # building a request touches neither HTTP, PostgreSQL nor JetStream
    modes = {
        "thread": Syncer(settings, none, none, Layout(), key),
        "pool": Syncer(settings, none, none, Layout(), key, cpu=cpu),
    }
    try:
        await modes["pool"]._post_body(())  # start the worker before timing
        per: dict[str, list[float]] = {mode: [] for mode in modes}
        lags: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(rounds):
            for mode, syncer in modes.items():
                each, seen = await _round(syncer, requests)
                per[mode].append(each)
                lags[mode].extend(seen)
    finally:
        await cpu.aclose()
    print(f"request PoW at difficulty {difficulty}, {requests} requests x {rounds} rounds")
    for mode in modes:
        seen = sorted(lags[mode])
        print(
            f"  {mode:<6} {min(per[mode]) * 1000:6.1f} ms/request   loop lag median"
            f" {seen[len(seen) // 2] * 1000:5.2f} ms  p99 {seen[int(len(seen) * 0.99)] * 1000:5.2f}"
            f" ms  max {seen[-1] * 1000:5.2f} ms  ({len(seen)} wake-ups)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--difficulty", type=int, default=15)
    args = parser.parse_args()
    logging.disable(logging.INFO)  # one pow_mining_in_process line per request otherwise
    asyncio.run(main(args.requests, args.rounds, args.difficulty))
