"""Small PNG plots of a soak or chaos run: one per kind of series, one line per process or route.

Needs matplotlib (``pip install matplotlib``, or the ``bench`` dependency group); without it the
run still prints its figures and verdict, and says the plots were skipped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from soak_stats import Series

__all__ = ["TITLES", "plot"]

#: The series plotted, each in its own file ``<prefix>-<name>.png``, with its title and unit.
TITLES: Final = {
    "rss_mb": ("Resident memory per process", "MiB"),
    "cache_mb": ("Cache files held in the gateway's bounded memory", "MiB"),
    "heap_mb": ("nats-server live heap, after a collection", "MiB"),
    "nats_mb": ("nats-server live heap by what holds it", "MiB"),
    "sys_mb": ("nats-server memory taken from the system (address space)", "MiB"),
    "held_mb": ("nats-server memory held (taken less handed back)", "MiB"),
    "probe_ms": ("The same work each minute (SHA-256 of 32 MiB, fastest of 3)", "ms"),
    "steal_pct": ("Cores' time the hypervisor gave to others (steal)", "% of all cores"),
    "majflt_per_s": ("Pages read back from disk (major faults, whole machine)", "faults/s"),
    "procs": ("PostgreSQL processes (server and backends)", "processes"),
    "fds": ("Open file descriptors per process", "descriptors"),
    "cpu_pct": ("CPU per process", "% of one core"),
    "pending": ("Consumer pending (messages not yet acknowledged)", "messages"),
    "p99_ms": ("Client latency p99 per route", "ms"),
    "p50_ms": ("Client latency p50 per route", "ms"),
    "srv_p99_ms": ("Gateway latency p99 per route (its histogram)", "ms"),
    "cache_age_s": ("Age of the newest cache (largest of each minute)", "s"),
    "lag": ("Objects the second node lags behind", "objects"),
    "load1": ("Machine load average (1 min, 2 cores)", "load"),
    "recovery_s": ("Seconds until the node was whole again, per kill", "s"),
}


def plot(
    series: Mapping[str, Series],
    out: Path,
    prefix: str,
    marks: Sequence[tuple[float, str]] = (),
) -> list[Path]:
    """Write the plots of ``series`` into ``out``; ``marks`` are ``(minute, label)`` drawn as
    vertical lines (what chaos killed). Returns the files written (none without matplotlib)."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional, only for the plots

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("matplotlib is not installed: no plots")
        return []
    grouped: defaultdict[str, dict[str, Series]] = defaultdict(dict)
    for key, points in series.items():
        what, _, name = key.partition(":")
        if what in TITLES and points:
            grouped[what][name] = points
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for what, lines in sorted(grouped.items()):
        title, unit = TITLES[what]
        fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=90)
        for name, points in sorted(lines.items()):
            style = "--" if name.startswith("B/") else "-"  # the second node dashed
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            ax.plot(xs, ys, style, marker="o" if what == "recovery_s" else ".", label=name)
        for minute, _label in marks:
            ax.axvline(minute, color="tab:red", alpha=0.35, linewidth=0.8, linestyle=":")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("minute")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=6, ncol=3, loc="best")
        fig.tight_layout()
        path = out / f"{prefix}-{what.replace('_', '-')}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
