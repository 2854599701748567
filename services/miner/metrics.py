"""Every collector of the miner service, on the default registry served at ``/metrics``.

Labels come from closed sets: ``outcome`` is one of ``OUTCOMES``, ``difficulty_bucket`` one of
``DIFFICULTY_BUCKETS`` (never the job id or the text).
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ATTEMPTS",
    "CANCELLATIONS",
    "DIFFICULTY_BUCKETS",
    "JOBS",
    "JOBS_IN_FLIGHT",
    "JOB_DURATION",
    "OUTCOMES",
    "WORKERS",
    "difficulty_bucket",
]

OUTCOMES: Final = ("found", "cancelled", "deadline", "refused", "busy", "shutdown")
# Upper bounds of each bucket: 21 is the network's default strength (PROTOCOL.md §7.4).
_BUCKET_TOPS: Final = ((16, "1-16"), (20, "17-20"), (22, "21-22"), (24, "23-24"), (256, "25-256"))
DIFFICULTY_BUCKETS: Final = tuple(name for _, name in _BUCKET_TOPS)

JOBS = Counter(
    "mim_miner_jobs_total",
    "Jobs finished, by outcome (found, cancelled, deadline, refused, busy, shutdown).",
    ["outcome"],
)
ATTEMPTS = Counter("mim_miner_attempts_total", "Hashes tried; its rate is the miner's speed.")
JOB_DURATION = Histogram(
    "mim_miner_job_duration_seconds",
    "Time from taking a job to its proof, by difficulty bucket.",
    ["difficulty_bucket"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
JOBS_IN_FLIGHT = Gauge("mim_miner_jobs_in_flight", "Jobs being searched right now.")
CANCELLATIONS = Counter(
    "mim_miner_cancellations_total",
    "Jobs stopped by a cancel message (another miner answered a split job first).",
)
WORKERS = Gauge("mim_miner_workers", "Search processes of this miner.")

for _outcome in OUTCOMES:
    JOBS.labels(outcome=_outcome)
for _bucket in DIFFICULTY_BUCKETS:
    JOB_DURATION.labels(difficulty_bucket=_bucket)


def difficulty_bucket(difficulty: int) -> str:
    """The ``difficulty_bucket`` label of a job of ``difficulty`` (1..256)."""
    for top, name in _BUCKET_TOPS:
        if difficulty <= top:
            return name
    return DIFFICULTY_BUCKETS[-1]
