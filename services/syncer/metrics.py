"""The syncer's Prometheus collectors; labels come from small closed sets, never a peer address."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BYTES_FETCHED",
    "CACHES_SKIPPED",
    "EXCLUSIONS",
    "LAST_SCAN",
    "LEASES",
    "OBJECTS_PULLED",
    "PAGES_BROKEN",
    "PAGES_FETCHED",
    "PAGES_SKIPPED",
    "PEERS_ACTIVE",
    "PEERS_KNOWN",
    "PINGS",
    "PURGATORY",
    "REMOTE_LAG_SECONDS",
    "SCAN_SECONDS",
    "SYNCS",
    "SYNCS_STARTED",
    "SYNC_SECONDS",
]

SYNCS_STARTED = Counter("mim_syncer_syncs_started_total", "Syncs with a remote begun.")
SYNCS = Counter(
    "mim_syncer_syncs_total",
    "Syncs finished, by outcome (`ok` or the reason it failed).",
    ["outcome"],
)
SYNC_SECONDS = Histogram(
    "mim_syncer_sync_duration_seconds",
    "Time of one sync with a remote.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)
PAGES_FETCHED = Counter(
    "mim_syncer_pages_fetched_total",
    "Pages fetched from remotes, by type (status, node, index, manifest, entity, address, post).",
    ["page"],
)
BYTES_FETCHED = Counter("mim_syncer_bytes_fetched_total", "Body bytes received from remotes.")
PAGES_SKIPPED = Counter(
    "mim_syncer_pages_skipped_total", "Entity pages not fetched because their manifest is held."
)
CACHES_SKIPPED = Counter(
    "mim_syncer_caches_skipped_total",
    "Caches not read at all (not even their manifests): taken whole from the remote before.",
)
PAGES_BROKEN = Counter(
    "mim_syncer_pages_broken_total",
    "Pages dropped, by reason (json, signature, signer, http).",
    ["reason"],
)
OBJECTS_PULLED = Counter(
    "mim_syncer_objects_pulled_total", "Objects handed to the ingest stream, by kind.", ["kind"]
)
PEERS_KNOWN = Gauge("mim_syncer_peers_known", "Addresses in the table, by node type.", ["type"])
PEERS_ACTIVE = Gauge("mim_syncer_peers_active", "Syncs in progress now.")
EXCLUSIONS = Counter(
    "mim_syncer_exclusions_total", "Remotes put to rest after a sync, by class.", ["class"]
)
REMOTE_LAG_SECONDS = Histogram(
    "mim_syncer_remote_lag_seconds",
    "After a sync, how far the remote's newest page time is behind the remote's clock now.",
    buckets=(1, 10, 60, 300, 1800, 3600, 6 * 3600, 86400, 7 * 86400),
)
PURGATORY = Counter(
    "mim_syncer_purgatory_objects_total",
    "Objects from beyond the event horizon, by kind and outcome: `held` during a sync, then"
    " `admitted` (a newer descendant came with them) or `dropped` (§13.5).",
    ["kind", "outcome"],
)
PINGS = Counter(
    "mim_syncer_pings_total",
    "Pings of remotes (network scan, bootstrap), by outcome (`ok` or the reason it failed).",
    ["outcome"],
)
SCAN_SECONDS = Histogram(
    "mim_syncer_scan_duration_seconds",
    "Time of one network scan (every stored address pinged).",
    buckets=(0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600),
)
LAST_SCAN = Gauge(
    "mim_syncer_last_scan_timestamp_seconds", "Unix time the last network scan finished."
)
LEASES = Counter(
    "mim_syncer_leases_total",
    "Asks for the lease of a remote or a schedule, by lease (`remote`, `schedule`) and outcome:"
    " `taken`, `refused` (another replica holds it, or it rests), `lost` (taken over or not"
    " renewed in time: the work was stopped), `unavailable` (NATS did not answer).",
    ["lease", "outcome"],
)
