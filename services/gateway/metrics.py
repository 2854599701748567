"""The gateway's Prometheus collectors; labels come from small closed sets only."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BYTES_OUT",
    "CACHE_BYTES",
    "CACHE_FAILURES",
    "CACHE_GENERATED",
    "CACHE_GENERATION_SECONDS",
    "CACHE_PAGES",
    "CONNECTIONS",
    "CONNECTION_LIMITS",
    "CONTAINERS_WRITTEN",
    "LEASES_REFUSED",
    "POSTS_REJECTED",
    "REQUESTS",
    "REQUEST_SECONDS",
    "STATE_FULL",
    "SUBMITTED",
    "TOKEN_REFUSALS",
]

REQUESTS = Counter(
    "mim_gateway_requests_total",
    "HTTP requests answered, by route and status.",
    ["route", "status"],
)
REQUEST_SECONDS = Histogram(
    "mim_gateway_request_duration_seconds", "Time to answer one request, by route.", ["route"]
)
BYTES_OUT = Counter("mim_gateway_bytes_out_total", "Body bytes sent, by route.", ["route"])
CACHE_GENERATION_SECONDS = Histogram(
    "mim_gateway_cache_generation_seconds", "Time to regenerate every GET cache once."
)
CACHE_FAILURES = Counter(
    "mim_gateway_cache_failures_total", "Cache generations that failed (and were tried again)."
)
CACHE_GENERATED = Gauge(
    "mim_gateway_cache_generated_timestamp_seconds",
    "When the cache tree being served was generated (Unix time).",
)
CACHE_BYTES = Gauge("mim_gateway_cache_bytes", "Bytes of the current GET cache tree (plain).")
CACHE_PAGES = Gauge("mim_gateway_cache_pages", "Files in the current GET cache tree.")
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
TOKEN_REFUSALS = Counter(
    "mim_gateway_token_refusals_total",
    "Submissions refused on the public listener, by reason (missing, unknown, rate).",
    ["reason"],
)
