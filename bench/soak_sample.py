"""Every minute, one point of each series of a soak or chaos run.

From ``/proc`` (the pids ``node.json`` names; PostgreSQL with its backends): resident memory in
MiB, open file descriptors, CPU in percent of one core. PostgreSQL's memory is counted without its
shared memory (``VmRSS - RssShmem``), which every backend maps and which fills up to
``shared_buffers`` as tables are read: that is a cache filling, not a leak.

From the services' ``/metrics``: the validators' and the store's pending counts, the gateway's
p50 and p99 per route over the minute (from its histogram, as ``histogram_quantile`` would), the
tasks that failed (``mim_task_failures_total``), the bytes of cache files the gateway holds in its
bounded memory (``mim_gateway_cache_memory_bytes``), and the age of the newest cache
(``mim_gateway_cache_generated_timestamp_seconds``), probed every few seconds and kept as the
largest age of the minute. From the traffic: the client's own p50 and p99 per route. From
``node.json``: restarts. From ``mimrelay status``: how many objects the second node lags behind.
And the machine's load average, which says how much of the two cores the run had, and how long a
fixed piece of work takes this minute (``probe_ms:machine``, :func:`machine_probe_ms`), which says
whether the machine itself gave less: beside the processes' CPU it tells a host that slowed from a
node that does more for the same traffic. With it, from ``/proc/stat`` and ``/proc/vmstat``, the
share of the cores' time the hypervisor gave to others (``steal_pct:machine``) and the pages read
back from disk per second (``majflt_per_s:machine``): code or files evicted and faulted in again,
which costs every process CPU without more work to show for it.

From nats-server's heap profile (``nats_profile_url`` in ``node.json``, on when this run started
the node), asked for after a collection: the heap that is live (``HeapAlloc``), beside the
process's resident memory; the memory its Go runtime has taken from the system (``Sys``), which
its resident size cannot exceed but by the server's own mapped program, and that less the heap
pages it has handed back (``held_mb``, what a Go memory limit bounds); how much of the live heap
each part of :data:`NATS_PARTS` holds (its share of the profile's samples); and at the end the
functions that allocated what is still held (:func:`heap_sites`).
PostgreSQL's series also count its processes (``procs``), since each new backend adds memory.

Series keys are ``<what>:<name>``, e.g. ``rss_mb:A/gateway``, ``pending:A/store``,
``p99_ms:page``, ``srv_p99_ms:cache``, ``cache_mb:A/gateway``, ``cache_age_s:A``, ``lag:B``,
``heap_mb:A/nats``, ``sys_mb:A/nats``, ``held_mb:A/nats``, ``nats_mb:A/blocks``,
``procs:A/postgres``, ``load1:machine``, ``steal_pct:machine``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

from soak_node import Node, get
from soak_stats import Point, histogram_quantile, percentile
from soak_traffic import Traffic

__all__ = [
    "NATS_PARTS",
    "Metrics",
    "Sampler",
    "heap_parts",
    "heap_sites",
    "machine_counters",
    "machine_probe_ms",
    "read_metrics",
]

_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PAGE_KB: Final = os.sysconf("SC_PAGE_SIZE") // 1024
_MIB: Final = 1024.0

#: the fixed work of :func:`machine_probe_ms`
_PROBE: Final = bytes(32 * 1024 * 1024)

#: ``(sample name, labels) -> value`` of one scrape.
Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def read_metrics(url: str) -> Metrics:
    """One scrape of ``url``; empty when it does not answer."""
    status, body = get(url, timeout=5.0)
    if status != 200:
        return {}
    found: Metrics = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[sample.name, frozenset(sample.labels.items())] = float(sample.value)
    return found


def _named(metrics: Metrics, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(labels), v) for (n, labels), v in metrics.items() if n == name]


def _total(metrics: Metrics, name: str) -> float:
    return sum(v for _, v in _named(metrics, name))


def _proc(pid: int) -> tuple[float, float, int, float] | None:
    """Resident KiB, shared-memory KiB, open descriptors and CPU ticks of ``pid``."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            fields = dict(line.split(":", 1) for line in status if ":" in line)
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            after_name = stat.read().rsplit(")", 1)[1].split()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError):
        return None
    ticks = sum(int(after_name[n]) for n in (11, 12, 13, 14))  # utime stime cutime cstime
    rss = float(fields.get("VmRSS", "0 kB").split()[0])
    shmem = float(fields.get("RssShmem", "0 kB").split()[0])
    return rss, shmem, fds, float(ticks)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


class Sampler:
    """Collects the series of the module docstring for ``nodes`` (the first is the one driven)."""

    def __init__(self, nodes: Iterable[Node], traffic: Traffic) -> None:
        self.nodes = list(nodes)
        self.traffic = traffic
        self.series: defaultdict[str, list[Point]] = defaultdict(list)
        self.started = time.monotonic()
        self._cpu: dict[str, tuple[float, frozenset[int], float]] = {}
        self._histograms: dict[str, dict[float, float]] = {}
        self._oldest: dict[str, float] = {}
        self.heap_profiles: dict[str, str] = {}  # node -> nats-server's last heap profile
        self._machine: tuple[float, float, float, float] | None = None

    def minute(self) -> float:
        return (time.monotonic() - self.started) / 60.0

    def add(self, key: str, value: float, minute: float | None = None) -> None:
        self.series[key].append((self.minute() if minute is None else minute, value))

    async def run(self, stop: asyncio.Event, every: float = 60.0, probe: float = 5.0) -> None:
        """A point of every series each ``every`` seconds, cache ages each ``probe``."""
        next_row = time.monotonic() + every
        while not stop.is_set():
            await _guarded(self.probe_caches)
            if time.monotonic() >= next_row:
                await _guarded(self.row)
                next_row += every
            try:
                await asyncio.wait_for(stop.wait(), probe)
            except TimeoutError:
                continue

    def probe_caches(self) -> None:
        now = time.time()
        for node in self.nodes:
            url = node.metrics_urls().get("gateway")
            generated = (
                _total(read_metrics(url), "mim_gateway_cache_generated_timestamp_seconds")
                if url
                else 0
            )
            if generated > 0:
                self._oldest[node.name] = max(self._oldest.get(node.name, 0.0), now - generated)

    def row(self) -> None:
        """One point of every series, now."""
        minute = self.minute()
        self.add("load1:machine", os.getloadavg()[0], minute)
        self.add("probe_ms:machine", machine_probe_ms(), minute)
        self._counters(minute)
        for node in self.nodes:
            self._processes(node, minute)
            self._services(node, minute)
            self._nats_heap(node, minute)
            restarts = sum(s.get("restarts", 0) for s in node.services())
            restarts += sum(s.get("restarts", 0) for s in node.state().get("servers", {}).values())
            self.add(f"restarts:{node.name}", restarts, minute)
            if node.name in self._oldest:
                self.add(f"cache_age_s:{node.name}", self._oldest.pop(node.name), minute)
        for route, took in self.traffic.take_latencies().items():
            self.add(f"p50_ms:{route}", percentile(took, 0.5) * 1000, minute)
            self.add(f"p99_ms:{route}", percentile(took, 0.99) * 1000, minute)
        self.add("accepted:A", len(self.traffic.ledger.accepted), minute)
        counts = [node.stored_count() for node in self.nodes[:2]]
        if len(counts) == 2 and min(counts) >= 0:
            self.add("lag:B", counts[0] - counts[1], minute)

    def _counters(self, minute: float) -> None:
        """Steal and major faults since the last row, from the machine's counters."""
        now = (time.monotonic(), *machine_counters())
        last, self._machine = self._machine, now
        if last is None:
            return
        seconds = now[0] - last[0]
        total, steal, faults = (n - o for n, o in zip(now[1:], last[1:], strict=True))
        if total > 0:
            self.add("steal_pct:machine", 100 * steal / total, minute)
        if seconds > 0 and faults >= 0:
            self.add("majflt_per_s:machine", faults / seconds, minute)

    def _processes(self, node: Node, minute: float) -> None:
        now = time.monotonic()
        for name, pids in node.processes().items():
            group = [*pids, *_children(pids[0])] if name.endswith("/postgres") else pids
            read = [r for r in map(_proc, group) if r is not None]
            if not read:
                continue
            shared = name.endswith("/postgres")
            rss = sum(r[0] - (r[1] if shared else 0) for r in read)
            self.add(f"rss_mb:{name}", rss / _MIB, minute)
            self.add(f"fds:{name}", sum(r[2] for r in read), minute)
            if shared:
                self.add(f"procs:{name}", len(read), minute)
            ticks, members = sum(r[3] for r in read), frozenset(group)
            last = self._cpu.get(name)
            self._cpu[name] = (ticks, members, now)
            if last is not None and pids[0] in last[1] and ticks >= last[0]:
                self.add(
                    f"cpu_pct:{name}", 100 * (ticks - last[0]) / _TICKS / (now - last[2]), minute
                )

    def _nats_heap(self, node: Node, minute: float) -> None:
        url = node.state().get("nats_profile_url")
        if not url:
            return
        # gc=1: a collection first, so the profile and its statistics are of what is live now
        status, body = get(f"{url}heap?debug=1&gc=1", timeout=10.0)
        text = body.decode(errors="replace") if status == 200 else ""
        stats = _memstats(text)
        live, taken = stats.get("HeapAlloc"), stats.get("Sys")
        if taken is not None:
            self.add(f"sys_mb:{node.name}/nats", taken / (1024 * 1024), minute)
            # less the heap pages it has handed back: what it holds, and a Go memory limit bounds
            released = stats.get("HeapReleased", 0.0)
            self.add(f"held_mb:{node.name}/nats", (taken - released) / (1024 * 1024), minute)
        if live is not None:
            live /= 1024 * 1024
            self.add(f"heap_mb:{node.name}/nats", live, minute)
            for part, share in heap_parts(text).items():
                self.add(f"nats_mb:{node.name}/{part}", share * live, minute)
            self.heap_profiles[node.name] = text

    def _services(self, node: Node, minute: float) -> None:
        pending: dict[str, float] = {}
        failures = 0.0
        for name, url in node.metrics_urls().items():
            metrics = read_metrics(url)
            failures += _total(metrics, "mim_task_failures_total")
            for metric, stage in (
                ("mim_validator_consumer_pending", "validator"),
                ("mim_store_consumer_pending", "store"),
            ):
                for _, value in _named(metrics, metric):
                    pending[stage] = max(pending.get(stage, 0.0), value)
            if name == "gateway":
                self._latency(node, metrics, minute)
                held = _total(metrics, "mim_gateway_cache_memory_bytes") / (1024 * 1024)
                self.add(f"cache_mb:{node.name}/gateway", held, minute)
        for stage, value in pending.items():
            self.add(f"pending:{node.name}/{stage}", value, minute)
        self.add(f"task_failures:{node.name}", failures, minute)

    def _latency(self, node: Node, metrics: Metrics, minute: float) -> None:
        """p50 and p99 per route of the driven node's gateway over the last minute."""
        if node is not self.nodes[0]:
            return
        buckets: defaultdict[str, dict[float, float]] = defaultdict(dict)
        for labels, value in _named(metrics, "mim_gateway_request_duration_seconds_bucket"):
            buckets[labels["route"]][float(labels["le"])] = value
        for route, now in buckets.items():
            before = self._histograms.get(route, {})
            self._histograms[route] = now
            delta = _delta(now, before)
            for q, key in ((0.5, "srv_p50_ms"), (0.99, "srv_p99_ms")):
                value = histogram_quantile(q, list(delta.items()))
                if not math.isnan(value):
                    self.add(f"{key}:{route}", value * 1000, minute)


def _memstats(profile: str) -> dict[str, float]:
    """The ``# Name = number`` lines of Go's text heap profile (``runtime.MemStats``)."""
    found: dict[str, float] = {}
    for line in profile.splitlines():
        name, sep, value = line.removeprefix("# ").partition(" = ")
        if sep and line.startswith("# ") and value.strip().isdigit():
            found[name] = float(value)
    return found


def _held(profile: str) -> list[tuple[float, list[str]]]:
    """The in-use samples of a Go text heap profile (``heap?debug=1``): for each, the bytes it
    stands for and its stack's frames, nearest first. Samples are scaled as pprof does."""
    held: list[tuple[float, list[str]]] = []
    inuse, frames, rate = 0.0, list[str](), 512 * 1024.0
    for line in [*profile.splitlines(), ""]:
        head = line.split(" @", 1)[0]
        if line.startswith("heap profile:") and "@ heap/" in line:
            rate = int(line.rsplit("/", 1)[1]) / 2  # the header gives twice the sampling rate
        elif ":" in head and "[" in head and head.split(":", 1)[0].strip().isdigit():
            count, size = (int(v) for v in head.split("[", 1)[0].split(":"))
            # One sample stands for 1 / (1 - e^(-size/rate)) allocations of its mean size, as
            # pprof scales it; small allocations are otherwise under-counted.
            mean = size / count if count else 0.0
            inuse, frames = (size / -math.expm1(-mean / rate) if mean else 0.0), []
        elif line.startswith("#\t0x") and inuse and line.count("\t") >= 2:
            frames.append(line.split("\t")[2].rsplit("+0x", 1)[0])
        elif not line.strip() and inuse and frames:
            held.append((inuse, frames))
            inuse, frames = 0, []
    return held


def heap_sites(
    profile: str, top: int = 8, prefix: str = "github.com/nats-io/nats-server/v2/"
) -> list[str]:
    """The sites holding most of the sampled in-use heap of a Go text heap profile
    (``heap?debug=1``), each as ``share% site``. A site is the two frames of the server's own code
    (``prefix``, left out of the names) nearest the allocation, its pools' constructors
    (``init.func``) skipped, e.g. ``server.getMsgBlockBuf < server.(*msgBlock).loadMsgs``; a stack
    without any is charged to its first frame."""
    held: defaultdict[str, float] = defaultdict(float)
    for inuse, frames in _held(profile):
        own = [f.removeprefix(prefix) for f in frames if f.startswith(prefix) and ".init." not in f]
        held[" < ".join(own[:2]) if own else frames[0]] += inuse
    total = sum(held.values()) or 1.0
    ranked = sorted(held.items(), key=lambda item: -item[1])[:top]
    return [f"{100 * n / total:4.1f}% {name}" for name, n in ranked]


#: What holds nats-server's heap, by a function of the server on the allocation's stack: the
#: buffers of the message blocks it writes and reads (each stream's newest block, and a block
#: read until it has been idle a few seconds: each at most a block's size), and the message IDs of
#: the duplicate window (``MIM_DEDUPE_WINDOW_SECONDS``). The rest is ``other``.
NATS_PARTS: Final = {
    "blocks": ("server.getMsgBlockBuf",),
    "dedupe": ("server.getMsgId", "server.(*stream).storeMsgIdLocked"),
}


def heap_parts(
    profile: str, prefix: str = "github.com/nats-io/nats-server/v2/"
) -> dict[str, float]:
    """The share of the sampled in-use heap of a nats-server heap profile held by each part of
    :data:`NATS_PARTS`, and by ``other``; the shares add up to 1 (empty without samples)."""
    held = dict.fromkeys([*NATS_PARTS, "other"], 0.0)
    for inuse, frames in _held(profile):
        own = {f.removeprefix(prefix) for f in frames}
        part = next((p for p, f in NATS_PARTS.items() if own.intersection(f)), "other")
        held[part] += inuse
    total = sum(held.values())
    return {part: n / total for part, n in held.items()} if total else {}


def machine_counters() -> tuple[float, float, float]:
    """The cores' time so far (all and stolen, in ticks) and the major page faults so far."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [float(n) for n in stat.readline().split()[1:]]
    with open("/proc/vmstat", encoding="ascii") as vmstat:
        faults = next((float(v) for k, v in map(str.split, vmstat) if k == "pgmajfault"), 0.0)
    # user nice system idle iowait irq softirq steal (guest time is counted in user already)
    return sum(ticks[:8]), ticks[7] if len(ticks) > 7 else 0.0, faults


def machine_probe_ms(rounds: int = 3) -> float:
    """Milliseconds the fastest of ``rounds`` SHA-256 passes over 32 MiB took.

    The work is the same every minute, so this rises only when the machine gives it less: a slower
    or busier host, or every core taken. The fastest pass is kept, so a single preemption does not
    count.
    """
    fastest = math.inf
    for _ in range(rounds):
        began = time.perf_counter()
        hashlib.sha256(_PROBE).digest()
        fastest = min(fastest, time.perf_counter() - began)
    return fastest * 1000


async def _guarded(work: Callable[[], None]) -> None:
    """Run ``work`` in a thread; a sample that fails (a node half restarted) is told and skipped."""
    try:
        await asyncio.to_thread(work)
    except Exception as exc:  # a lost sample must not end the run
        print(f"  sample skipped: {exc!r}")


def _delta(now: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    """The buckets' counts since ``before``; all of ``now`` after a restart reset them."""
    if any(now.get(le, 0.0) < count for le, count in before.items()):
        return dict(now)
    return {le: count - before.get(le, 0.0) for le, count in now.items()}
