"""The arithmetic of the soak and chaos runs: slopes, quantiles, and the verdict against the bounds.

Pure: no I/O, no clock. A series is a list of ``(minute, value)`` points, ``minute`` counted from
the start of the run; the samplers (``soak_sample``) make them and the drivers (``soak.py``,
``chaos.py``) hand them here at the end.

The bounds, each checked on the points after the warm-up:

- memory: the least-squares slope of each process's resident memory is under
  ``rss_mb_per_10min`` (1 MiB per 10 minutes); for a process with a ``cache_mb`` series (a
  gateway), the slope of its resident memory less the cache files it holds, since that memory
  fills up to its own bound (``MIM_GATEWAY_CACHE_MEMORY_BYTES``) by design and what must not grow
  is the rest;
  nats-server's is judged only after ``nats_warmup_minutes`` when that is longer: it holds, by
  design, what grows for a set time after the traffic starts and then stays level (the duplicate
  window remembers every message ID for ``MIM_DEDUPE_WINDOW_SECONDS``, 600 s; the POST answer
  containers are kept an hour), so its memory is judged once all of that has reached its size.
  like every process, nats-server is judged by its resident memory. Between collections that
  swings by tens of MiB, so its slope carries a wide margin (each memory figure shows its own);
  a Go memory limit (``MIM_NODE_NATS_MEMORY_LIMIT_BYTES``) caps the swings. What its runtime has
  taken from the system (``sys_mb``) is not judged: it also counts address space whose pages
  were handed back, and under a memory limit it rose in 8 MiB steps (a block buffer finding no
  free run of pages that long) while the resident size stayed under the limit;
- backlog: the least-squares line of each consumer's pending count rises by less than
  ``backlog_rise`` messages over the run (or ten seconds of the traffic, if that is more);
- latency: for each route, the median p99 of the last third of the minutes is within
  ``p99_ratio`` (2x) of the median p99 of the first third;
- caches: after the warm-up, the newest cache is never older than ``cache_intervals`` (2)
  generation intervals;
- objects: nothing accepted is missing or stored twice.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Bounds",
    "Check",
    "Objects",
    "Point",
    "Series",
    "after",
    "compare",
    "figures",
    "histogram_quantile",
    "nats_parts",
    "objects_check",
    "percentile",
    "rise",
    "slope",
    "slope_margin",
    "verdict",
]

Point = tuple[float, float]
Series = Sequence[Point]


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a run must stay within; the defaults are the soak's stated bounds."""

    warmup_minutes: float = 5.0
    nats_warmup_minutes: float = 0.0
    rss_mb_per_10min: float = 1.0
    backlog_rise: float = 100.0
    p99_ratio: float = 2.0
    cache_intervals: float = 2.0


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the verdict: what was checked, the figure, the bound, and whether it held.

    ``ok`` is None when there were too few points to tell.
    """

    name: str
    figure: str
    bound: str
    ok: bool | None

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "n/a "}[self.ok]
        return f"{mark} {self.name:<34} {self.figure:<28} bound {self.bound}"


def slope(points: Series) -> float:
    """The least-squares slope of ``points`` (value per minute); 0 for fewer than two minutes."""
    if len(points) < 2:
        return 0.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mx) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / spread


def slope_margin(points: Series) -> float:
    """Half the width of the 95% interval of :func:`slope` (value per minute), from the scatter of
    ``points`` about their line; infinite for fewer than three points or minutes."""
    if len(points) < 3:
        return math.inf
    mx, my = statistics.fmean(p[0] for p in points), statistics.fmean(p[1] for p in points)
    spread = sum((x - mx) ** 2 for x, _ in points)
    if spread == 0:
        return math.inf
    b = slope(points)
    scatter = sum((y - my - b * (x - mx)) ** 2 for x, y in points) / (len(points) - 2)
    return 1.96 * math.sqrt(scatter / spread)


def rise(points: Series) -> float:
    """How much the least-squares line of ``points`` rises from their first to their last minute."""
    if len(points) < 2:
        return 0.0
    return slope(points) * (points[-1][0] - points[0][0])


def after(points: Series, minute: float) -> list[Point]:
    """The points at or after ``minute``."""
    return [p for p in points if p[0] >= minute]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The ``q`` quantile of a Prometheus histogram given as cumulative ``(le, count)`` pairs.

    As Prometheus' ``histogram_quantile``: linear within the bucket the rank falls in, the upper
    bound of the last finite bucket when it falls in ``+Inf``; NaN when the histogram is empty.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return math.nan
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


@dataclass(frozen=True, slots=True)
class Objects:
    """What a store holds against what it should: see :func:`compare`."""

    expected: int
    stored: int
    lost: int  # expected, not stored
    stale: int  # stored at a version older than expected
    doubled: int  # stored more than once
    unknown: int  # stored, never expected nor sent

    def line(self) -> str:
        return (
            f"{self.expected} expected, {self.stored} stored: {self.lost} lost, "
            f"{self.stale} stale, {self.doubled} doubled, {self.unknown} never sent"
        )


def compare(
    expected: Mapping[tuple[str, str], int],
    stored: Mapping[tuple[str, str], Sequence[int]],
    sent: Collection[tuple[str, str]] = (),
) -> Objects:
    """``stored`` (each object's versions found) against ``expected`` (the newest version of each
    object that must be there); ``sent`` is everything that may be there besides."""
    lost = stale = 0
    for key, version in expected.items():
        found = stored.get(key)
        if not found:
            lost += 1
        elif max(found) < version:
            stale += 1
    doubled = sum(1 for versions in stored.values() if len(versions) > 1)
    unknown = sum(1 for key in stored if key not in expected and key not in sent)
    return Objects(len(expected), len(stored), lost, stale, doubled, unknown)


def figures(series: Mapping[str, Series], warmup: float) -> dict[str, dict[str, float]]:
    """Per series: points, first, last and largest value, and the slope per 10 minutes after
    ``warmup`` minutes (rounded for a summary a person reads)."""
    found = {}
    for key, points in sorted(series.items()):
        values = [p[1] for p in points if not math.isnan(p[1])]
        if not values:
            continue
        found[key] = {
            "points": len(values),
            "first": round(values[0], 3),
            "last": round(values[-1], 3),
            "max": round(max(values), 3),
            "slope_per_10min": round(slope(after(points, warmup)) * 10, 3),
        }
    return found


def nats_parts(series: Mapping[str, Series], since: float) -> dict[str, dict[str, float]]:
    """Per node, the slope in MiB per 10 minutes after minute ``since`` of nats-server's live heap
    (``heap_mb:<node>/nats``, as ``live``) and of each part of it (``nats_mb:<node>/<part>``);
    a series with fewer than 3 points after ``since`` is left out."""
    found: dict[str, dict[str, float]] = {}
    for key in sorted(series):
        kind, _, name = key.partition(":")
        if kind == "heap_mb" and name.endswith("/nats"):
            node, part = name.removesuffix("/nats"), "live"
        elif kind == "nats_mb":
            node, _, part = name.partition("/")
        else:
            continue
        points = after(series[key], since)
        if len(points) >= 3:
            found.setdefault(node, {})[part] = round(slope(points) * 10, 2)
    return found


def _thirds(points: Series) -> tuple[list[float], list[float]] | None:
    third = len(points) // 3
    if third < 2:
        return None
    return [p[1] for p in points[:third]], [p[1] for p in points[-third:]]


def _memory(
    name: str,
    points: Series,
    bounds: Bounds,
    held: Series = (),
    since: str = "",
) -> Check:
    """The slope of ``points``, less ``held`` (bounded cache memory in the same process) when
    given, minute by minute; ``since`` says from when, if not from the common warm-up."""
    what = f"memory {name}"
    if held:
        cached = dict(held)
        points = [(m, v - cached[m]) for m, v in points if m in cached]
        what = f"memory {name} less its caches"
    if len(points) < 3:
        return Check(what, f"{len(points)} minutes", f"3 minutes{since}", None)
    per_10 = slope(points) * 10
    return Check(
        what,
        f"{per_10:+.2f} ±{slope_margin(points) * 10:.2f} MiB/10 min",
        f"< {bounds.rss_mb_per_10min:g} MiB/10 min{since}",
        per_10 < bounds.rss_mb_per_10min,
    )


def _backlog(name: str, points: Series, bounds: Bounds, rate: float) -> Check:
    limit = max(bounds.backlog_rise, 10 * rate)
    if len(points) < 3:
        return Check(f"backlog {name}", f"{len(points)} minutes", "3 minutes", None)
    grew = rise(points)
    return Check(
        f"backlog {name}",
        f"{grew:+.0f} msgs (last {points[-1][1]:.0f})",
        f"rise < {limit:.0f}",
        grew < limit,
    )


def _latency(route: str, points: Series, bounds: Bounds) -> Check:
    values = [p for p in points if not math.isnan(p[1])]
    thirds = _thirds(values)
    if thirds is None:
        return Check(f"p99 {route}", f"{len(values)} minutes", "6 minutes", None)
    first, last = statistics.median(thirds[0]), statistics.median(thirds[1])
    ratio = last / first if first > 0 else math.inf
    return Check(
        f"p99 {route}",
        f"{first:.1f} -> {last:.1f} ms ({ratio:.2f}x)",
        f"<= {bounds.p99_ratio:g}x",
        ratio <= bounds.p99_ratio,
    )


def verdict(
    series: Mapping[str, Series],
    bounds: Bounds,
    *,
    rate: float,
    cache_interval: float,
    lost: int,
    doubled: int,
) -> list[Check]:
    """Every check of a run; see the module docstring for the bounds.

    ``series`` is keyed ``rss_mb:<process>``, ``cache_mb:<process>``,
    ``pending:<consumer>``, ``p99_ms:<route>`` and ``cache_age_s:<node>`` (other keys are
    ignored); ``rate`` is the submissions per second, ``cache_interval`` the seconds between two
    cache generations.
    """
    checks: list[Check] = []
    for key in sorted(series):
        kind, _, name = key.partition(":")
        warmup = bounds.warmup_minutes
        if kind == "rss_mb" and name.endswith("/nats"):
            warmup = max(warmup, bounds.nats_warmup_minutes)
        points = after(series[key], warmup)
        if kind == "rss_mb":
            held = after(series.get(f"cache_mb:{name}", ()), warmup)
            since = "" if warmup == bounds.warmup_minutes else f" from minute {warmup:g}"
            checks.append(_memory(name, points, bounds, held, since))
        elif kind == "pending":
            checks.append(_backlog(name, points, bounds, rate))
        elif kind == "p99_ms":
            checks.append(_latency(name, points, bounds))
        elif kind == "cache_age_s":
            oldest = max((p[1] for p in points), default=math.nan)  # after the warm-up
            limit = bounds.cache_intervals * cache_interval
            ok = None if math.isnan(oldest) else oldest <= limit
            checks.append(
                Check(f"cache age {name}", f"max {oldest:.0f} s", f"<= {limit:.0f} s", ok)
            )
    checks.append(objects_check(lost, doubled))
    return checks


def objects_check(lost: int, doubled: int) -> Check:
    """Nothing accepted missing (or stored at an older version), nothing stored twice."""
    return Check(
        "objects", f"{lost} lost, {doubled} doubled", "0 and 0", lost == 0 and doubled == 0
    )
