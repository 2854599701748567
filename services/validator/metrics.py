"""Every collector of the validator, on the default registry the metrics server serves.

Labels come from closed sets: ``kind`` is a Mim kind or ``unknown`` (an unreadable subject),
``outcome`` is ``accepted``, ``rejected`` or ``duplicate`` (an accepted object JetStream had
already seen), ``stage`` is a verification stage of ``mim.verify.STAGES`` plus ``blocked``,
``size`` (over ``MIM_VALIDATOR_MAX_OBJECT_BYTES``) and ``delivery`` (given up after
``MIM_VALIDATOR_MAX_DELIVERIES``); the timing ``step`` is one of :data:`STEPS`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BATCH_SIZE",
    "BLOCKLIST_ENTRIES",
    "CHECK_DURATION",
    "CONSUMER_PENDING",
    "OBJECTS",
    "REJECTIONS",
    "RETRIES",
]

OBJECTS = Counter(
    "mim_validator_objects_total",
    "Objects handled, by kind and outcome (accepted, rejected, duplicate).",
    ["kind", "outcome"],
)
REJECTIONS = Counter(
    "mim_validator_rejections_total",
    "Objects rejected, by kind and the stage that refused them.",
    ["kind", "stage"],
)
RETRIES = Counter(
    "mim_validator_retries_total",
    "Messages whose verdict is published again, held after a transient failure or left for"
    " redelivery after a refusal, by cause.",
    ["cause"],
)
CHECK_DURATION = Histogram(
    "mim_validator_check_duration_seconds",
    "Time per step: verify per object; blocked (block list and verdicts), publish, ack per batch.",
    ["stage"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
BATCH_SIZE = Histogram(
    "mim_validator_batch_size",
    "Messages per fetched batch.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
CONSUMER_PENDING = Gauge(
    "mim_validator_consumer_pending",
    "Messages waiting on the ingest stream for a validator, as of the last fetch.",
)
BLOCKLIST_ENTRIES = Gauge(
    "mim_validator_blocklist_entries",
    "Fingerprints on the block list as this validator currently sees it.",
)
