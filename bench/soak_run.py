"""What the soak and the chaos runs share: their options, the two nodes, the ingest capacity
measured at the start, the traffic and sampling for the length of the run, and the end: settle,
check every object, verdict, summary and plots.

A run goes:

1. node A (``mimrelay up`` in a temporary directory, or ``--node DIR`` of a running node) and
   node B, which syncs from A (``MIM_BOOTSTRAP`` names A; or ``--peer DIR``; or ``--no-peer``);
2. the capacity: ``--capacity-objects`` objects made first, then sent as fast as the gateway takes
   them, timed until A's store has handled all of them; the run's rate is ``--share`` of it
   (or ``--rate`` objects/s given);
3. the traffic (``soak_traffic``) and the sampler (``soak_sample``) for ``--minutes``, beside
   whatever the driver adds (chaos kills processes);
4. the end: traffic stopped, A's consumers drained, every object A stores compared with what it
   accepted, B's store compared with A's once B has caught up, every service's health, then the
   verdict (``soak_stats.verdict``), a summary (JSON) and the plots (``soak_plot``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

import soak_forge
import soak_plot
from relay.node import NodeSupervisorSettings
from relay.settings import NodeSettings
from relay.settings import load as load_settings
from services.gateway import containers
from soak_node import Node
from soak_sample import Sampler, heap_sites, read_metrics
from soak_stats import (
    Bounds,
    Check,
    Objects,
    after,
    compare,
    figures,
    nats_parts,
    slope,
    slope_margin,
    verdict,
)
from soak_traffic import Traffic

__all__ = ["Run", "options"]

_SETTLE_SECONDS: Final = 600.0
_PEER_TICK: Final = "10"  # seconds between B's neighbour ticks
# A's rest after B synced it: a sync signs 8 POST requests, and a node takes at most 358 from one
# key in 50 minutes (PROTOCOL.md §16), so B must not come back sooner than every ~70 s
_PEER_REST: Final = "90"


def options(description: str, minutes: float, sample: float = 60.0) -> argparse.ArgumentParser:
    """The options both runs take; ``minutes`` and ``sample`` (seconds) are defaults."""
    parser = argparse.ArgumentParser(description=description)
    add = parser.add_argument
    add("--minutes", type=float, default=minutes, help="length of the traffic")
    add("--share", type=float, default=0.1, help="rate as a share of the measured capacity")
    add("--rate", type=float, default=0.0, help="objects/s (skips the capacity measurement)")
    add("--capacity-objects", type=int, default=3000, help="objects timed for the capacity")
    add("--difficulty", type=int, default=6, help="proof of work of the objects and node minimum")
    add("--cache-interval", type=float, default=60.0, help="seconds between cache generations")
    add("--validators", type=int, default=1)
    add("--warmup", type=float, default=-1.0, help="minutes left out of slopes (default 1/6)")
    add("--sample-seconds", type=float, default=sample, help="seconds between two samples")
    add("--node", type=Path, help="data directory of a running node to drive instead")
    add("--peer", type=Path, help="data directory of a running node syncing from it")
    add("--no-peer", action="store_true", help="no second node")
    add("--request-pow", type=int, default=15, help="proof of work of the POST queries")
    add("--query-every", type=float, default=60.0, help="seconds between two POST range queries")
    add(
        "--lookup-every", type=float, default=10.0, help="seconds between POST queries for one post"
    )
    add(
        "--query-overlap", type=int, default=120,
        help="seconds before the previous query a POST query asks from (as a syncer's cursor)",
    )  # fmt: skip
    add("--seed", type=int, default=18, help="seed of what is made, and of chaos' choices")
    add("--token", default=os.environ.get("MIM_API_TOKEN", ""), help="submission bearer token")
    add("--out", type=Path, help="where logs, node data and raw series go (default: a temp dir)")
    add("--plots", type=Path, help="where the PNGs and the summary go (default: --out)")
    return parser


@dataclass
class Run:
    """One soak or chaos run; see the module docstring."""

    args: argparse.Namespace
    prefix: str  # "soak" or "chaos": names the summary and plots
    out: Path = field(init=False)
    nodes: list[Node] = field(default_factory=list)
    started: list[Node] = field(default_factory=list)
    rate: float = 0.0
    capacity: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = self.args.out or Path(tempfile.mkdtemp(prefix=f"mimrelay-{self.prefix}-"))
        # a node started on an earlier run's data would mix its objects and logs into this run's
        for name, given in (("a", self.args.node), ("b", self.args.peer or self.args.no_peer)):
            if not given and (self.out / name).exists():
                raise SystemExit(
                    f"{self.out / name} holds the node of an earlier run: "
                    "name a new --out, or remove it"
                )
        self.out.mkdir(parents=True, exist_ok=True)

    # --- nodes ---------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {
            "MIM_MIN_POW": str(self.args.difficulty),
            "MIM_GATEWAY_CACHE_INTERVAL_SECONDS": str(self.args.cache_interval),
            "MIM_SYNCER_TICK_SECONDS": _PEER_TICK,
            "MIM_SYNCER_EXCLUSION_LIVE_SECONDS": _PEER_REST,
        }

    def start_nodes(self) -> None:
        args = self.args
        if args.node:
            a = Node("A", args.node)
        else:
            a = Node.start("A", self.out / "a", self._env(), args.validators)
            self.started.append(a)
        print(f"node A healthy after {a.wait_healthy():.1f} s: {a.api_url}")
        self.nodes = [a]
        if args.no_peer:
            return
        if args.peer:
            b = Node("B", args.peer)
        else:
            bootstrap = a.api_url.removeprefix("http://").removeprefix("https://")
            env = {**self._env(), "MIM_BOOTSTRAP": bootstrap}
            b = Node.start("B", self.out / "b", env, 1)
            self.started.append(b)
        print(f"node B healthy after {b.wait_healthy():.1f} s: {b.api_url}")
        self.nodes.append(b)

    def stop_nodes(self) -> None:
        for node in reversed(self.started):
            print(f"node {node.name} stopped: exit status {node.stop()}")

    # --- traffic -------------------------------------------------------------------------------

    def traffic(self, forge: Any, *, tolerant: bool = False) -> Traffic:
        """The traffic on A; ``tolerant`` takes 429, 5xx and no answer as what a node that is
        being killed gives, not as unexpected."""
        a = self.nodes[0]
        return Traffic(
            a.api_url, a.submit_url(), forge, rate=self.rate, token=self.args.token,
            query_every=self.args.query_every, query_overlap=self.args.query_overlap,
            lookup_every=self.args.lookup_every,
            tolerant=tolerant,
        )  # fmt: skip

    @contextlib.asynccontextmanager
    async def session(self, *, tolerant: bool = False) -> AsyncIterator[tuple[Traffic, Sampler]]:
        """The nodes, the forge, the traffic at the measured rate and a sampler; the forge and the
        nodes this run started are stopped at the end. See :meth:`traffic` for ``tolerant``."""
        forge = None
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        terminated = False

        def terminate() -> None:  # SIGTERM: stop the nodes this run started, as the end does
            nonlocal terminated
            terminated = True
            if task is not None:
                task.cancel()

        loop.add_signal_handler(signal.SIGTERM, terminate)
        try:
            self.start_nodes()
            forge = soak_forge.start_worker(
                self.args.seed, self.args.difficulty, self.args.request_pow, peer_port=7000
            )
            traffic = self.traffic(forge, tolerant=tolerant)
            await self.measure(traffic, forge)
            yield traffic, Sampler(self.nodes, traffic)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            if forge is not None:
                forge.shutdown(cancel_futures=True)
            self.stop_nodes()
            if terminated:
                raise SystemExit("stopped by SIGTERM; the nodes it started are stopped")

    async def measure(self, traffic: Traffic, forge: Any) -> None:
        """The ingest capacity through the gateway, and the run's rate from it."""
        await traffic.begin()
        if self.args.rate > 0:
            self.rate = traffic.rate = self.args.rate
            print(f"running at {self.rate:.1f}/s (--rate)")
            return
        loop = asyncio.get_running_loop()
        count = self.args.capacity_objects
        wires = await loop.run_in_executor(forge, soak_forge.batch, count, int(time.time()))
        store = self.nodes[0].metrics_urls()["store"]
        if math.isnan(await _until("the first objects stored", lambda: _drained(self.nodes[0]))):
            raise SystemExit("node A does not store what it is sent")
        before = _handled(store)
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=60.0) as http:
            for at in range(0, len(wires), 250):
                await traffic.submit(http, wires[at : at + 250])
        while _handled(store) < before + len(wires):
            if time.monotonic() - started > _SETTLE_SECONDS:
                raise SystemExit("the capacity objects were not all stored in time")
            await asyncio.sleep(0.2)
        self.capacity = len(wires) / (time.monotonic() - started)
        self.rate = max(1.0, self.args.share * self.capacity)
        traffic.rate = self.rate
        print(f"capacity {self.capacity:.0f} objects/s through the gateway ({count} objects); "
              f"running at {self.rate:.1f}/s ({self.args.share:.0%})")  # fmt: skip

    async def drive(
        self,
        traffic: Traffic,
        sampler: Sampler,
        beside: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
    ) -> None:
        """Traffic, sampling and ``beside`` for ``--minutes``."""
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(traffic.run(stop)),
            asyncio.create_task(sampler.run(stop, every=self.args.sample_seconds)),
            asyncio.create_task(beside(stop)),
        ]
        try:
            done, _ = await asyncio.wait(
                tasks, timeout=self.args.minutes * 60, return_when="FIRST_EXCEPTION"
            )
            for task in done:
                task.result()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(sampler.row)

    # --- the end -------------------------------------------------------------------------------

    async def settle(self, traffic: Traffic) -> tuple[Objects, Objects | None]:
        """Wait for A to drain and B to catch up; A against what it accepted, B against A."""
        a = self.nodes[0]
        took = await _until("node A's consumers drained", lambda: _drained(a))
        print(f"node A drained {took:.0f} s after the traffic stopped")
        held = await asyncio.to_thread(a.export)
        ledger = traffic.ledger
        in_a = compare(ledger.accepted, held, ledger.sent)
        print(f"node A: {in_a.line()}")
        if len(self.nodes) < 2:
            return in_a, None
        b = self.nodes[1]
        want = len(held)
        took = await _until("node B caught up", lambda: b.stored_count() >= want)
        print(f"node B caught up {took:.0f} s after A drained")
        newest = {key: max(versions) for key, versions in held.items()}
        in_b = compare(newest, await asyncio.to_thread(b.export))
        print(f"node B: {in_b.line()}")
        return in_a, in_b

    async def healthy_again(self, within: float = 180.0) -> dict[str, float]:
        """Seconds until each node says every server and service is healthy (NaN: never)."""
        found = {}
        for node in self.nodes:
            found[node.name] = await _until(
                f"node {node.name} healthy", functools.partial(_all_healthy, node), within
            )
        return found

    def report(
        self,
        sampler: Sampler,
        traffic: Traffic,
        checks: list[Check],
        marks: list[tuple[float, str]] | None = None,
    ) -> None:
        """Print the verdict and the figures; write the summary, the raw series and the plots."""
        series = dict(sampler.series)
        print()
        for check in checks:
            print(check.line())
        failed = [c for c in checks if c.ok is False]
        told = "FAIL" if failed else "PASS"
        print(f"verdict: {told} ({len(failed)} of {len(checks)} checks failed)")
        since = self.bounds().nats_warmup_minutes
        parts = nats_parts(series, since)
        for name, slopes in parts.items():
            rest = ", ".join(f"{part} {n:+.2f}" for part, n in slopes.items() if part != "live")
            memory = []
            for what, label in (("rss", "resident"), ("held", "held"), ("sys", "taken")):
                points = after(series.get(f"{what}_mb:{name}/nats", []), since)
                if len(points) > 2:
                    per_10, margin = slope(points) * 10, slope_margin(points) * 10
                    top = max(p[1] for p in points)
                    memory.append(f"{label} {per_10:+.2f} ±{margin:.2f} (max {top:.0f} MiB)")
            print(f"nats-server {name} from minute {since:g}, MiB/10 min: live heap "
                  f"{slopes.get('live', math.nan):+.2f} ({rest}); {'; '.join(memory)}")  # fmt: skip
        load = [p[1] for p in series.get("load1:machine", [])]
        # as both nodes read it from this environment (0: no limit)
        nats_limit = load_settings(NodeSupervisorSettings).nats_memory_limit_bytes
        summary = {
            "run": self.prefix,
            "minutes": self.args.minutes,
            "capacity_per_s": round(self.capacity, 1),
            "rate_per_s": round(self.rate, 2),
            "share": self.args.share,
            "difficulty": self.args.difficulty,
            "cache_interval_s": self.args.cache_interval,
            "validators": self.args.validators,
            "nats_memory_limit_bytes": nats_limit,
            "cores": os.cpu_count(),
            "load1": {
                "mean": round(sum(load) / len(load), 2) if load else None,
                "max": max(load, default=None),
            },
            "verdict": "FAIL" if failed else "PASS",
            "checks": [asdict(c) for c in checks],
            "traffic": {
                "outcomes": dict(traffic.ledger.outcomes),
                "accepted": len(traffic.ledger.accepted),
                "statuses": {f"{r} {s}": n for (r, s), n in sorted(traffic.statuses.items())},
                "server_errors": dict(sorted(traffic.server_errors.items())),
                "hostile": {f"{c} {s}": n for (c, s), n in sorted(traffic.hostile.items())},
                "unexpected": traffic.unexpected[:20],
            },
            "series": figures(series, self._warmup()),
            "nats_heap_sites": {n: heap_sites(t) for n, t in sampler.heap_profiles.items()},
            "nats_heap_slopes": {"from_minute": since, **parts},
            **self.extra,
        }
        print(f"load average (1 min) during the run: mean {summary['load1']['mean']}, "
              f"max {summary['load1']['max']} on {os.cpu_count()} cores")  # fmt: skip
        (self.out / f"{self.prefix}-series.json").write_text(json.dumps(series))
        for name, profile in sampler.heap_profiles.items():
            (self.out / f"{self.prefix}-nats-heap-{name}.txt").write_text(profile)
            keys = [k for k in series if k.startswith(f"nats_mb:{name}/")]
            held = ", ".join(f"{k.rsplit('/', 1)[1]} {series[k][-1][1]:.0f}" for k in keys)
            print(f"nats-server {name}, live heap by part (MiB, last): {held}")
            print(f"nats-server {name}, heap in use by function (last profile):")
            for site in summary["nats_heap_sites"][name][:5]:
                print(f"  {site}")
        plots = self.args.plots or self.out
        plots.mkdir(parents=True, exist_ok=True)
        (plots / f"{self.prefix}-summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        written = soak_plot.plot(series, plots, self.prefix, marks or [])
        print(f"summary and {len(written)} plots in {plots}; raw series and logs in {self.out}")

    def checks(
        self, traffic: Traffic, in_a: Objects, in_b: Objects | None, health: dict[str, float]
    ) -> list[Check]:
        """What both runs check at the end, beside their own."""
        checks = []
        if in_b is not None:
            missing = in_b.lost + in_b.stale
            checks.append(Check("node B converged", f"{missing} missing", "0", missing == 0))
        unhealthy = [name for name, took in health.items() if math.isnan(took)]
        figure = ", ".join(f"{n} {t:.0f} s" for n, t in health.items())
        checks.append(Check("healthy at the end", figure, "every service", not unhealthy))
        odd = len(traffic.unexpected)
        checks.append(Check("hostile and odd answers", f"{odd} unexpected", "0", odd == 0))
        return checks

    def _warmup(self) -> float:
        warmup: float = self.args.warmup
        return warmup if warmup >= 0 else float(self.args.minutes) / 6

    def bounds(self) -> Bounds:
        """The stated bounds; nats-server is judged a minute after both its duplicate window (as
        the nodes read it, from this environment) and the containers' life have filled."""
        window = NodeSettings().dedupe_window_seconds
        nats_warmup = max(window, containers.LIFE_SECONDS) / 60 + 1
        return Bounds(warmup_minutes=self._warmup(), nats_warmup_minutes=nats_warmup)

    def verdict(self, sampler: Sampler, in_a: Objects) -> list[Check]:
        return verdict(
            sampler.series,
            self.bounds(),
            rate=self.rate,
            cache_interval=self.args.cache_interval,
            lost=in_a.lost + in_a.stale,
            doubled=in_a.doubled,
        )


def _handled(store_metrics: str) -> float:
    metrics = read_metrics(store_metrics)
    return sum(v for (name, _), v in metrics.items() if name == "mim_store_objects_total")


def _all_healthy(node: Node) -> bool:
    return node.status().get("exit_code") == 0


def _drained(node: Node) -> bool:
    """Whether every consumer of the node has nothing pending or unacknowledged."""
    streams = node.status().get("streams")
    if not isinstance(streams, dict) or "error" in streams:
        return False
    consumers = [s["consumer"] for s in streams.values() if s.get("consumer")]
    return bool(consumers) and all(c["pending"] == 0 and c["unacked"] == 0 for c in consumers)


async def _until(what: str, check: Callable[[], bool], within: float = _SETTLE_SECONDS) -> float:
    """Seconds until ``check`` holds; NaN, told in one line, if it does not within ``within``."""
    started = time.monotonic()
    while not await asyncio.to_thread(check):
        if time.monotonic() - started > within:
            print(f"not within {within:.0f} s: {what}")
            return math.nan
        await asyncio.sleep(2.0)
    return time.monotonic() - started
