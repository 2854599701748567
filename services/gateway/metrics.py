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
    "POSTS_REJECTED",
    "REQUESTS",
    "REQUEST_SECONDS",
    "SUBMITTED",
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
