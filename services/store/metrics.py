"""Every collector of the store service, on the default registry."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ADDRESSES",
    "BATCH_SIZE",
    "COLLECTED",
    "DB_ERRORS",
    "OBJECTS",
    "OUTCOMES",
    "PENDING",
    "WRITE_DURATION",
]

#: Closed label set of ``mim_store_objects_total{outcome}``.
OUTCOMES: Final = ("inserted", "updated", "duplicate", "stale", "refused")

OBJECTS: Final = Counter(
    "mim_store_objects_total",
    "Accepted objects the writer handled, by kind and what it did with them.",
    ["kind", "outcome"],
)
ADDRESSES: Final = Counter(
    "mim_store_addresses_total",
    "Addresses the writer handled, by source (first or third party) and outcome (written, kept,"
    " refused: a place the node may not dial).",
    ["source", "outcome"],
)
BATCH_SIZE: Final = Histogram(
    "mim_store_batch_size",
    "Messages per written batch.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 4096),
)
WRITE_DURATION: Final = Histogram(
    "mim_store_write_duration_seconds",
    "Time to write and commit one batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DB_ERRORS: Final = Counter(
    "mim_store_db_errors_total",
    "Batches whose write failed on a database error and was retried later.",
)
PENDING: Final = Gauge(
    "mim_store_consumer_pending",
    "Messages on the accepted stream not yet delivered to or acknowledged by the store.",
)
COLLECTED: Final = Counter(
    "mim_store_collected_total", "Objects removed by retention (§20.6), by kind.", ["kind"]
)
