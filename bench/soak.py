"""Soak: a node under steady traffic for ``--minutes``, watched every minute, judged at the end.

    python bench/soak.py [--minutes 30] [--share 0.1] [--plots docs/soak]

Starts node A (``mimrelay up`` in a temporary directory) and node B syncing from it, measures A's
ingest capacity through its gateway, then drives A at ``--share`` of it: submissions of every
kind with updates, a GET crawler, POST queries and a hostile trickle (``soak_traffic``). Every
minute it samples each process's memory, descriptors and CPU, the consumers' pending counts, the
latency per route, the age of the newest cache and how far B lags (``soak_sample``). At the end it
stops the traffic, lets A drain and B catch up, and checks:

- memory: each process's resident memory grows by less than 1 MiB per 10 minutes after warm-up;
- backlog: no consumer's pending count grows;
- latency: each route's p99 stays within 2x of what it was at the start;
- caches: never older than two generation intervals;
- objects: A stores every object it accepted, at the newest version accepted, once; B holds the
  same;
- no 5xx, no task that failed, no process restarted, every answer to the hostile trickle as
  expected, every service healthy.

It prints each check with its figure and bound, the verdict, and the load average of the machine
during the run (the bounds are judged all the same: a busy machine is part of the result). The
summary (JSON) and one PNG per series go to ``--plots``. ``--node DIR`` drives a node already
running from its data directory instead (``--peer DIR`` for its second node, ``--no-peer`` for
none). Nothing is asserted; the exit status is 1 when a check failed.
"""

from __future__ import annotations

import asyncio
import sys

from soak_run import Run, options
from soak_sample import Sampler
from soak_stats import Check
from soak_traffic import Traffic


def _quiet_checks(sampler: Sampler, traffic: Traffic) -> list[Check]:
    """No 5xx, no failed task, no restart: a soak is not meant to see any."""
    errors = sum(n for (_, status), n in traffic.statuses.items() if status >= 500)
    rules = ", ".join(f"{n} {what}" for what, n in sorted(traffic.server_errors.items()))
    checks = [
        Check("5xx answers", f"{errors} ({rules})" if rules else str(errors), "0", errors == 0)
    ]
    for key, what in (("task_failures", "tasks failed"), ("restarts", "restarts")):
        for name in ("A", "B"):
            points = sampler.series.get(f"{key}:{name}", [])
            if points:
                last = points[-1][1]
                checks.append(Check(f"{what} {name}", f"{last:.0f}", "0", last == 0))
    return checks


async def _idle(stop: asyncio.Event) -> None:
    await stop.wait()


async def main() -> int:
    args = options(__doc__.split("\n")[0], minutes=30).parse_args()
    run = Run(args, "soak")
    async with run.session() as (traffic, sampler):
        print(f"driving node A for {args.minutes:g} minutes")
        await run.drive(traffic, sampler, _idle)
        in_a, in_b = await run.settle(traffic)
        health = await run.healthy_again(within=60.0)
        checks = run.verdict(sampler, in_a)
        checks += _quiet_checks(sampler, traffic) + run.checks(traffic, in_a, in_b, health)
        run.report(sampler, traffic, checks)
    return 1 if any(c.ok is False for c in checks) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
