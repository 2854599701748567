"""Pages: the signed ``ApiResponse`` envelopes a node serves and sends (PROTOCOL.md §6.1, §11).

Three modules hold them, one idea each, and this one gathers their names so that a caller reaches
them all as ``mim.pages.<name>``:

- ``mim.envelope``: the envelope itself, the node's self-description, and page signatures (§6.1,
  §11.5);
- ``mim.request``: POST requests, as a client builds them and a server checks them, and their
  filters (§11.4);
- ``mim.caches``: the pre-generated caches, cut into pages, with their indexes and manifests
  (§11.6).
"""

from __future__ import annotations

from mim.caches import (
    CACHE_SLICE_SECONDS,
    ENTITY_PAGE_SIZES,
    INDEX_PAGE_SIZES,
    MANIFEST_PAGE_SIZE,
    cache_id,
    cache_pages,
    endpoint_index,
    entity_counts,
    head_slices,
    index_entry,
    sanitise_address,
    split,
)
from mim.envelope import (
    CLIENT,
    NODE_TYPE_LIVE,
    NODE_TYPE_STATIC,
    PROTOCOL,
    node_id,
    node_page,
    prefill,
    sign_page,
    signed_text,
    verify_page,
)
from mim.request import (
    CLOCK_SKEW_SECONDS,
    EMBEDS,
    FILTER_VALUES_MAX,
    FILTERS_MAX,
    NONCE_MAX,
    REQUEST_MIN_POW,
    TIMESTAMP_DIGITS_MAX,
    Query,
    RequestRefused,
    build_request,
    check_request,
    parse_filters,
    timestamp_filter,
)

__all__ = [
    "CACHE_SLICE_SECONDS",
    "CLIENT",
    "CLOCK_SKEW_SECONDS",
    "EMBEDS",
    "ENTITY_PAGE_SIZES",
    "FILTERS_MAX",
    "FILTER_VALUES_MAX",
    "INDEX_PAGE_SIZES",
    "MANIFEST_PAGE_SIZE",
    "NODE_TYPE_LIVE",
    "NODE_TYPE_STATIC",
    "NONCE_MAX",
    "PROTOCOL",
    "REQUEST_MIN_POW",
    "TIMESTAMP_DIGITS_MAX",
    "Query",
    "RequestRefused",
    "build_request",
    "cache_id",
    "cache_pages",
    "check_request",
    "endpoint_index",
    "entity_counts",
    "head_slices",
    "index_entry",
    "node_id",
    "node_page",
    "parse_filters",
    "prefill",
    "sanitise_address",
    "sign_page",
    "signed_text",
    "split",
    "timestamp_filter",
    "verify_page",
]
