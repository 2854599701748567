"""Chaos: the soak's traffic while node A's processes are killed; nothing may be lost.

    python bench/chaos.py [--minutes 15] [--kill-every 30] [--server-kills 2] [--plots docs/soak]

The same two nodes and traffic as ``bench/soak.py`` (``soak_run``). Every ``--kill-every``
seconds one process of node A gets SIGKILL: a stage (gateway, store, a validator, a miner, the
syncer) drawn at random (every stage once in each round, the rounds in random orders), except
that ``--server-kills`` times each, spread over the run, it is nats-server or PostgreSQL instead.
Samples are taken every 15 s (``--sample-seconds``), so the plots show each dip.
After each kill the run waits until the node is whole again: the killed process replaced (a new
pid in ``node.json``), every ``/healthz`` 200 and the API answering, and prints how long that
took. No new kill comes before the node has recovered.

At the end the traffic stops and it checks that every object A accepted is stored exactly once at
its newest accepted version, that B converged to the same objects, that every service of both
nodes is healthy, and that the node recovered within ``--recovery-limit`` seconds after every
kill. Answers of 429, 5xx or none at all are what a node being killed gives, so they are counted,
not held against it. Prints what was killed when and each recovery time; the summary and plots
(kills marked) go to ``--plots``. The exit status is 1 when a check failed.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Final

from soak_node import Node
from soak_run import Run, options
from soak_sample import Sampler
from soak_stats import Check, objects_check

SERVERS: Final = ("nats", "postgres")


@dataclass
class Kill:
    minute: float
    target: str
    pid: int
    recovery_s: float = math.nan


def plan(count: int, server_kills: int, stages: list[str], rng: random.Random) -> list[str]:
    """What each of ``count`` kills hits: each server ``server_kills`` times, evenly spread, the
    others the stages in rounds, each round in a random order (so every stage is hit)."""
    rounds = [rng.sample(stages, len(stages)) for _ in range(count // len(stages) + 1)]
    targets = [stage for order in rounds for stage in order][:count]
    servers = [s for _ in range(server_kills) for s in SERVERS]
    for n, server in enumerate(servers):
        targets[min(count - 1, (n + 1) * count // (len(servers) + 1))] = server
    return targets


def _pid(node: Node, target: str) -> int | None:
    state = node.state()
    if target in SERVERS:
        pid = state.get("servers", {}).get(target, {}).get("pid")
    else:
        pid = next((s.get("pid") for s in state.get("services", []) if s["name"] == target), None)
    return int(pid) if pid else None


def _recovered(node: Node, target: str, killed: int) -> bool:
    pid = _pid(node, target)
    return pid is not None and pid != killed and node.healthy()


class Chaos:
    """Kills and recoveries of one run."""

    def __init__(self, run: Run, sampler: Sampler) -> None:
        self.run = run
        self.sampler = sampler
        self.kills: list[Kill] = []

    async def __call__(self, stop: asyncio.Event) -> None:
        args, node = self.run.args, self.run.nodes[0]
        count = max(1, int(args.minutes * 60 // args.kill_every) - 1)
        stages = [s["name"] for s in node.services()]
        targets = plan(count, args.server_kills, stages, random.Random(args.seed))
        next_at = time.monotonic() + args.kill_every
        for target in targets:
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
                return
            except TimeoutError:
                pass
            await self._kill(node, target, args.recovery_limit)
            next_at = max(next_at + args.kill_every, time.monotonic() + 5.0)

    async def _kill(self, node: Node, target: str, limit: float) -> None:
        pid = _pid(node, target)
        if pid is None:
            print(f"  {target}: no pid in node.json, skipped")
            return
        kill = Kill(round(self.sampler.minute(), 2), target, pid)
        self.kills.append(kill)
        started = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        while time.monotonic() - started < limit:
            await asyncio.sleep(0.25)
            if await asyncio.to_thread(_recovered, node, target, pid):
                kill.recovery_s = round(time.monotonic() - started, 2)
                break
        self.sampler.add(f"recovery_s:{target}", kill.recovery_s, kill.minute)
        told = f"{kill.recovery_s:.1f} s" if not math.isnan(kill.recovery_s) else "NOT recovered"
        print(f"  minute {kill.minute:5.2f}: SIGKILL {target:<11} (pid {pid}): whole after {told}")

    def checks(self, limit: float) -> list[Check]:
        times = [k.recovery_s for k in self.kills]
        failed = [k for k in self.kills if math.isnan(k.recovery_s)]
        longest = max((t for t in times if not math.isnan(t)), default=math.nan)
        figure = f"{len(self.kills) - len(failed)} of {len(self.kills)}, longest {longest:.1f} s"
        return [Check("recovered after every kill", figure, f"each <= {limit:g} s", not failed)]

    def table(self) -> dict[str, object]:
        by_target: dict[str, list[float]] = {}
        for kill in self.kills:
            by_target.setdefault(kill.target, []).append(kill.recovery_s)
        print("\nrecovery after SIGKILL, by target (seconds):")
        summary = {}
        for target, times in sorted(by_target.items()):
            done = [t for t in times if not math.isnan(t)]
            median = statistics.median(done) if done else math.nan
            largest = max(done, default=math.nan)
            print(f"  {target:<11} {len(times)} kills  median {median:5.1f}  max {largest:5.1f}")
            summary[target] = {"kills": len(times), "median_s": median, "max_s": largest}
        return {"kills": [asdict(k) for k in self.kills], "recovery": summary}


async def main() -> int:
    parser = options(__doc__.split("\n")[0], minutes=15, sample=15.0)
    parser.add_argument("--kill-every", type=float, default=30.0, help="seconds between kills")
    parser.add_argument("--server-kills", type=int, default=2, help="kills of each server")
    parser.add_argument("--recovery-limit", type=float, default=120.0, help="seconds")
    args = parser.parse_args()
    run = Run(args, "chaos")
    async with run.session(tolerant=True) as (traffic, sampler):
        chaos = Chaos(run, sampler)
        print(f"driving node A for {args.minutes:g} minutes, a kill every {args.kill_every:g} s")
        await run.drive(traffic, sampler, chaos)
        run.extra.update(chaos.table())
        in_a, in_b = await run.settle(traffic)
        health = await run.healthy_again()
        checks = chaos.checks(args.recovery_limit)
        checks.append(objects_check(in_a.lost + in_a.stale, in_a.doubled))
        checks += run.checks(traffic, in_a, in_b, health)
        run.report(sampler, traffic, checks, marks=[(k.minute, k.target) for k in chaos.kills])
    return 1 if any(c.ok is False for c in checks) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
