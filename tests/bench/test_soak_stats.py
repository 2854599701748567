"""The arithmetic behind the soak and chaos verdicts (``bench/soak_stats.py``, ``bench/chaos.py``).

The runs themselves are benches, run by hand for half an hour; these check only their pure parts.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from chaos import SERVERS, plan
from soak_stats import (
    Bounds,
    compare,
    figures,
    histogram_quantile,
    nats_parts,
    percentile,
    rise,
    slope,
    slope_margin,
    verdict,
)

MINUTES = [float(m) for m in range(31)]


def _line(start: float, per_minute: float) -> list[tuple[float, float]]:
    return [(m, start + per_minute * m) for m in MINUTES]


def _checks(series: dict[str, list[tuple[float, float]]], **kwargs: int) -> dict[str, bool | None]:
    found = verdict(
        series,
        Bounds(),
        rate=5.0,
        cache_interval=60.0,
        lost=kwargs.get("lost", 0),
        doubled=kwargs.get("doubled", 0),
    )
    return {c.name: c.ok for c in found}


def test_slope_and_rise_of_a_straight_line_are_exact() -> None:
    """A line rising 0.3 per minute has slope 0.3 and rises 9 over 30 minutes."""
    points = _line(100.0, 0.3)
    assert slope(points) == pytest.approx(0.3)
    assert rise(points) == pytest.approx(9.0)


def test_slope_of_too_few_points_is_zero() -> None:
    """One point, or points all at the same minute, have no slope."""
    assert slope([(1.0, 5.0)]) == 0.0
    assert slope([(1.0, 5.0), (1.0, 9.0)]) == 0.0


def test_slope_sees_through_noise() -> None:
    """A flat series with noise of ±5 has a slope near 0, a rising one near its rise."""
    noise = random.Random(1)
    flat = [(m, 50 + noise.uniform(-5, 5)) for m in MINUTES]
    rising = [(m, v + 2 * m) for m, v in flat]
    assert abs(slope(flat)) < 0.3
    assert slope(rising) == pytest.approx(2.0, abs=0.3)


def test_percentile_interpolates() -> None:
    """The median of 1..4 is 2.5, p99 of 1..101 is 100, and nothing has NaN."""
    assert percentile([4, 1, 3, 2], 0.5) == 2.5
    assert percentile(list(range(1, 102)), 0.99) == pytest.approx(100.0)
    assert math.isnan(percentile([], 0.5))


def test_histogram_quantile_follows_prometheus() -> None:
    """Linear inside the bucket the rank falls in; the last finite bound when it falls in +Inf."""
    buckets = [(0.005, 50.0), (0.01, 90.0), (0.025, 100.0), (math.inf, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.005)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.0075)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.0235)
    overflow = [(0.005, 1.0), (0.01, 2.0), (math.inf, 10.0)]
    assert histogram_quantile(0.99, overflow) == 0.01
    assert math.isnan(histogram_quantile(0.5, [(0.005, 0.0), (math.inf, 0.0)]))


def test_memory_creeping_a_megabyte_per_ten_minutes_fails() -> None:
    """0.2 MiB a minute (2 per 10 minutes) fails the memory bound; 0.05 a minute passes."""
    checks = _checks({"rss_mb:A/store": _line(80, 0.2), "rss_mb:A/gateway": _line(80, 0.05)})
    assert checks["memory A/store"] is False
    assert checks["memory A/gateway"] is True


def test_memory_growth_during_warm_up_is_not_counted() -> None:
    """Memory that grows in the first five minutes and then stays flat passes."""
    warm = [(m, 60 + 10 * min(m, 5.0)) for m in MINUTES]
    assert _checks({"rss_mb:A/gateway": warm})["memory A/gateway"] is True


def test_nats_server_is_judged_after_its_duplicate_window_has_filled() -> None:
    """nats-server's memory rising for the eleven minutes its duplicate window takes to fill,
    then flat, passes; the same rise in any other process fails, and nats-server rising after
    the window fails too."""
    filling = [(m, 40 + 5 * min(m, 11.0)) for m in MINUTES]
    later = [(m, 40 + 5 * max(0.0, min(m, 20.0) - 11)) for m in MINUTES]
    bounds = Bounds(nats_warmup_minutes=11.0)
    series = {"rss_mb:A/nats": filling, "rss_mb:A/store": filling, "rss_mb:B/nats": later}
    found = verdict(series, bounds, rate=5.0, cache_interval=60.0, lost=0, doubled=0)
    checks = {c.name: c.ok for c in found}
    assert checks["memory A/nats"] is True
    assert checks["memory A/store"] is False
    assert checks["memory B/nats"] is False
    lines = {c.name: c.line() for c in found}
    assert lines["memory A/nats"].endswith("bound < 1 MiB/10 min from minute 11")
    assert lines["memory A/store"].endswith("bound < 1 MiB/10 min")


def test_the_slope_margin_holds_the_true_slope_about_95_times_in_100() -> None:
    """A straight line has no margin; for a line under noise, slope ± margin holds the line's
    true slope in about 95% of runs, and the margin narrows as the run gets longer."""
    assert slope_margin(_line(100.0, 0.3)) == pytest.approx(0.0)
    assert slope_margin([(1.0, 5.0), (2.0, 6.0)]) == math.inf
    noise = random.Random(7)

    def run(minutes: int) -> list[tuple[float, float]]:
        return [(float(m), 100 + 0.3 * m + noise.gauss(0, 20)) for m in range(minutes)]

    runs = [run(75) for _ in range(1000)]
    held = sum(abs(slope(r) - 0.3) <= slope_margin(r) for r in runs)
    assert 930 <= held <= 970
    assert statistics.fmean(map(slope_margin, runs)) > 2 * slope_margin(run(300))


def test_nats_server_is_judged_by_its_resident_memory_not_the_address_space_it_took() -> None:
    """What nats-server's runtime took from the system may step up while the pages it hands back
    keep its resident memory level: that server passes. One whose resident memory rises fails,
    whatever it took. Each figure carries the margin of its slope."""
    level = [(m, 100.0 + 4 * (-1) ** int(m)) for m in MINUTES]  # swings, no trend
    rising = [(m, 100 + 0.3 * m) for m in MINUTES]
    steps = [(m, 131.0 + 8 * (m > 2) + 8 * (m > 5)) for m in MINUTES]
    found = verdict({"rss_mb:A/nats": level, "sys_mb:A/nats": steps, "rss_mb:B/nats": rising,
                     "sys_mb:B/nats": [(m, 140.0) for m in MINUTES]}, Bounds(), rate=5.0,
                    cache_interval=60.0, lost=0, doubled=0)  # fmt: skip
    checks = {c.name: c for c in found}
    assert checks["memory A/nats"].ok is True
    assert checks["memory B/nats"].ok is False
    assert checks["memory B/nats"].figure == "+3.00 ±0.00 MiB/10 min"
    assert "±" in checks["memory A/nats"].figure
    assert not any("sys" in name or "taken" in name for name in checks)


def test_a_run_shorter_than_the_nats_warm_up_does_not_judge_nats_server_and_says_so() -> None:
    """When the run ends before nats-server's warm-up, its memory is neither passed nor failed,
    and the verdict line says from which minute it would be judged."""
    rising = [(m, 40 + 5 * m) for m in MINUTES]
    bounds = Bounds(nats_warmup_minutes=61.0)
    found = verdict({"rss_mb:A/nats": rising}, bounds, rate=5.0, cache_interval=60.0, lost=0,
                    doubled=0)  # fmt: skip
    (nats,) = [c for c in found if c.name == "memory A/nats"]
    assert nats.ok is None
    assert nats.line().startswith("n/a ")
    assert nats.line().endswith("bound 3 minutes from minute 61")


def test_nats_server_parts_are_told_by_their_slopes_after_its_warm_up() -> None:
    """Each node's live heap and each part of it get their slope per 10 minutes after the warm-up
    (the filling before it left out); a part with too few minutes after it, and the series of
    other processes, are not listed."""
    series = {
        "heap_mb:A/nats": [(m, 50 + 2 * max(0.0, m - 11) + 9 * (m < 11)) for m in MINUTES],
        "nats_mb:A/blocks": [(m, 20 + 2 * max(0.0, m - 11)) for m in MINUTES],
        "nats_mb:A/dedupe": [(m, 5 * min(m, 11.0)) for m in MINUTES],
        "nats_mb:B/other": [(m, 7.0) for m in MINUTES[:12]],
        "rss_mb:A/nats": _line(90, 1.0),
    }
    assert nats_parts(series, 11.0) == {"A": {"live": 20.0, "blocks": 20.0, "dedupe": 0.0}}
    assert nats_parts(series, 0.0)["B"] == {"other": 0.0}


def test_a_gateway_is_judged_without_the_cache_memory_it_fills_up_to_its_bound() -> None:
    """A gateway whose resident memory grows only as its bounded cache memory fills passes; one
    that grows beside it, as a leak would, fails."""
    filling = [(m, min(64.0, 3 * m)) for m in MINUTES]  # up to a 64 MiB bound
    follows = [(m, 80 + c) for m, c in filling]
    leaks = [(m, 80 + c + 0.3 * m) for m, c in filling]
    checks = _checks({"rss_mb:A/gateway": follows, "cache_mb:A/gateway": filling})
    assert checks == {"memory A/gateway less its caches": True, "objects": True}
    checks = _checks({"rss_mb:A/gateway": leaks, "cache_mb:A/gateway": filling})
    assert checks["memory A/gateway less its caches"] is False


def test_a_growing_backlog_fails_and_a_steady_one_passes() -> None:
    """Pending rising 20 a minute fails; pending that stays about 30 passes."""
    noise = random.Random(2)
    steady = [(m, 30 + noise.uniform(-20, 20)) for m in MINUTES]
    checks = _checks({"pending:A/store": _line(0, 20), "pending:A/validator": steady})
    assert checks["backlog A/store"] is False
    assert checks["backlog A/validator"] is True


def test_p99_doubling_over_the_run_fails() -> None:
    """A route whose p99 goes from 10 ms to 25 ms fails; one from 10 to 15 ms passes."""
    slow = [(m, 10.0 if m < 15 else 25.0) for m in MINUTES]
    fine = [(m, 10.0 if m < 15 else 15.0) for m in MINUTES]
    checks = _checks({"p99_ms:page": slow, "p99_ms:status": fine})
    assert checks["p99 page"] is False
    assert checks["p99 status"] is True


def test_too_few_minutes_cannot_be_judged() -> None:
    """Latency over four minutes after warm-up is neither a pass nor a failure."""
    short = [(m, 10.0) for m in (5.0, 6.0, 7.0, 8.0)]
    assert _checks({"p99_ms:page": short})["p99 page"] is None


def test_cache_older_than_two_intervals_fails() -> None:
    """With 60 s generations, a cache 130 s old after the warm-up fails and one 119 s old
    passes; a cache 300 s old during the warm-up (the first generations of an empty node) is
    not held against the run."""
    checks = _checks(
        {
            "cache_age_s:A": [(6, 30), (7, 130)],
            "cache_age_s:B": [(1, 300), (6, 119)],
        }
    )
    assert checks["cache age A"] is False
    assert checks["cache age B"] is True


def test_a_lost_or_doubled_object_fails() -> None:
    """One object lost, or one stored twice, fails the objects check."""
    assert _checks({})["objects"] is True
    assert _checks({}, lost=1)["objects"] is False
    assert _checks({}, doubled=1)["objects"] is False


def test_compare_tells_lost_stale_doubled_and_unknown() -> None:
    """Each way a store can differ from what it accepted is counted once."""
    expected = {("post", "a"): 0, ("post", "b"): 7, ("post", "c"): 0, ("vote", "d"): 3}
    stored = {
        ("post", "a"): [0],
        ("post", "b"): [5],  # older than accepted
        ("vote", "d"): [3, 3],  # twice
        ("post", "e"): [0],  # sent, not confirmed: allowed
        ("post", "f"): [0],  # never sent
    }
    found = compare(expected, stored, sent={("post", "e")})
    assert (found.lost, found.stale, found.doubled, found.unknown) == (1, 1, 1, 1)
    assert found.expected == 4 and found.stored == 5


def test_figures_sum_up_each_series() -> None:
    """Each series is summed up by its points, ends, largest value and slope after warm-up."""
    found = figures({"rss_mb:A/up": _line(40, 0.1), "lag:B": []}, warmup=5)
    assert found == {
        "rss_mb:A/up": {
            "points": 31,
            "first": 40.0,
            "last": 43.0,
            "max": 43.0,
            "slope_per_10min": 1.0,
        }
    }


def test_chaos_plan_kills_each_server_as_often_as_asked() -> None:
    """Each server is killed the given number of times, spread out, and every stage is hit."""
    stages = ["gateway", "store", "validator-1", "miner-1", "syncer"]
    targets = plan(29, 2, stages, random.Random(3))
    assert len(targets) == 29
    for server in SERVERS:
        assert targets.count(server) == 2
    at = [n for n, t in enumerate(targets) if t in SERVERS]
    assert min(b - a for a, b in itertools.pairwise(at)) >= 4
    assert set(targets) - set(SERVERS) == set(stages)
