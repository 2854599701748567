"""The gateway's Prometheus collectors; labels come from small closed sets only."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CACHE_BUILDER",
    "CACHE_BUILT",
    "CACHE_BYTES",
    "CACHE_FAILURES",
    "CACHE_GENERATED",
    "CACHE_GENERATION_SECONDS",
    "CACHE_MEMORY_BYTES",
    "CACHE_MEMORY_LOOKUPS",
    "CACHE_PAGES",
    "CONNECTIONS",
    "CONNECTION_LIMITS",
    "CONTAINERS_LATE",
    "CONTAINERS_REUSED",
    "CONTAINERS_WRITTEN",
    "LEASES_REFUSED",
    "POSTS_REJECTED",
    "REFUSALS",
    "REQUESTS",
    "STATE_FULL",
    "SUBMITTED",
    "TOKEN_REFUSALS",
    "RequestMeter",
]


class RequestMeter(Collector):
    """Every answer of both listeners, kept as plain numbers and turned into samples when
    scraped: ``mim_gateway_requests_total{route, status}``, the histogram
    ``mim_gateway_request_duration_seconds{route}`` (Prometheus' default buckets) and
    ``mim_gateway_bytes_out_total{route}`` (body bytes). A cached GET is answered in a few
    microseconds, and the client library's locked counters cost a quarter of that.

    Recorded on the event loop's thread only; a scrape from the metrics thread copies each table
    first (one C call under the GIL), so it sees whole numbers, at worst a request apart."""

    _BOUNDS: tuple[float, ...] = Histogram.DEFAULT_BUCKETS
    _LES: tuple[str, ...] = tuple("+Inf" if math.isinf(b) else repr(float(b)) for b in _BOUNDS)

    def __init__(self) -> None:
        self._answers: dict[tuple[str, int], int] = {}
        self._times: dict[str, list[float]] = {}  # per route: count per bucket, then the sum
        self._bytes: dict[str, int] = {}

    def record(self, route: str, status: int, length: int, seconds: float) -> None:
        key = (route, status)
        self._answers[key] = self._answers.get(key, 0) + 1
        times = self._times.get(route)
        if times is None:
            times = self._times[route] = [0.0] * (len(self._BOUNDS) + 1)
        times[bisect.bisect_left(self._BOUNDS, seconds)] += 1
        times[-1] += seconds
        if length:
            self._bytes[route] = self._bytes.get(route, 0) + length

    def describe(self) -> Iterator[Metric]:
        """The three families, without samples (what the registry checks names against)."""
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        answers, seconds, sent = self._families()
        for (route, status), count in list(self._answers.items()):
            answers.add_metric([route, str(status)], count)
        for route, times in list(self._times.items()):
            counts, total, running = list(times), 0.0, []
            for le, n in zip(self._LES, counts, strict=False):
                total += n
                running.append((le, total))
            seconds.add_metric([route], running, sum_value=counts[-1])
        for route, length in list(self._bytes.items()):
            sent.add_metric([route], length)
        return iter((answers, seconds, sent))

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, HistogramMetricFamily, CounterMetricFamily]:
        return (
            CounterMetricFamily(
                "mim_gateway_requests", "HTTP requests answered, by route and status.",
                labels=["route", "status"],
            ),
            HistogramMetricFamily(
                "mim_gateway_request_duration_seconds", "Time to answer one request, by route.",
                labels=["route"],
            ),
            CounterMetricFamily(
                "mim_gateway_bytes_out", "Body bytes sent, by route.", labels=["route"]
            ),
        )  # fmt: skip


REQUESTS = RequestMeter()
REGISTRY.register(REQUESTS)
REFUSALS = Counter(
    "mim_gateway_refusals_total",
    "Requests refused with an error body, by status and the rule named in it.",
    ["status", "rule"],
)
CACHE_GENERATION_SECONDS = Histogram(
    "mim_gateway_cache_generation_seconds",
    "Time of one cache generation (reading what is new, building, publishing).",
)
CACHE_FAILURES = Counter(
    "mim_gateway_cache_failures_total",
    "Cache generations, or loads of the latest one, that failed (and were tried again).",
)
CACHE_GENERATED = Gauge(
    "mim_gateway_cache_generated_timestamp_seconds",
    "When the caches served were last made or found current (Unix time): the builder sets it"
    " after every generation it runs, new objects or none; the others when they load one.",
)
CACHE_BYTES = Gauge(
    "mim_gateway_cache_bytes", "Plain bytes of the caches the served generation lists."
)
CACHE_PAGES = Gauge("mim_gateway_cache_pages", "Files of the caches the served generation lists.")
CACHE_BUILDER = Gauge(
    "mim_gateway_cache_builder", "1 while this replica holds the lease to build the caches."
)
CACHE_BUILT = Counter(
    "mim_gateway_caches_built_total",
    "Caches this replica built, by why (new objects, or a merge of a block's caches).",
    ["reason"],
)
CACHE_MEMORY_BYTES = Gauge(
    "mim_gateway_cache_memory_bytes", "Bytes of cache files held in this replica's memory."
)
CACHE_MEMORY_LOOKUPS = Counter(
    "mim_gateway_cache_memory_lookups_total",
    "Cache files asked of this replica's memory, by result (hit, or miss: read from PostgreSQL).",
    ["result"],
)
POSTS_REJECTED = Counter(
    "mim_gateway_posts_rejected_total", "POST requests refused, by rule family.", ["reason"]
)
SUBMITTED = Counter(
    "mim_gateway_submitted_total",
    "Objects submitted locally, by outcome (queued, duplicate, rejected, full, unavailable).",
    ["outcome"],
)
CONNECTIONS = Gauge("mim_gateway_connections", "HTTP connections open now, both listeners.")
CONNECTION_LIMITS = Counter(
    "mim_gateway_connection_limits_total",
    "Connections refused or closed at the HTTP layer, by rule (http.connections, http.idle,"
    " http.header_timeout, http.header_size, http.header_count, http.url_size, http.parse,"
    " http.write_timeout, http.body_linger).",
    ["rule"],
)
LEASES_REFUSED = Counter(
    "mim_gateway_lease_refusals_total",
    "Requests refused a lease (§11.2), by lease (main, ping) and reason (remotes, inflight,"
    " unavailable).",
    ["lease", "reason"],
)
STATE_FULL = Counter(
    "mim_gateway_state_full_total",
    "Requests refused because a bucket of shared request state was at its bound, by bucket"
    " (nonces, containers).",
    ["bucket"],
)
CONTAINERS_WRITTEN = Counter(
    "mim_gateway_containers_written_total", "POST answer containers written (§11.7)."
)
CONTAINERS_REUSED = Counter(
    "mim_gateway_containers_reused_total",
    "Earlier POST answer containers named again in an answer instead of read again (§11.7).",
)
CONTAINERS_LATE = Counter(
    "mim_gateway_containers_late_objects_total",
    "Objects read again beside a reused container, written by a transaction that had not finished"
    " when the container was read.",
)
TOKEN_REFUSALS = Counter(
    "mim_gateway_token_refusals_total",
    "Submissions refused on the public listener, by reason (missing, unknown, rate).",
    ["reason"],
)
