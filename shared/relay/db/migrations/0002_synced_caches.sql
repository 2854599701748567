-- Per remote node and endpoint, the caches (by URL) of which we took every page we lacked.
-- A published cache never changes (a new generation gets a new URL), so a sync skips a cache
-- listed here, manifests and all. Rewritten after each sync with what the remote's index lists.
CREATE TABLE synced_caches (
    node_id  text NOT NULL,
    endpoint text NOT NULL,
    cache    text NOT NULL,
    PRIMARY KEY (node_id, endpoint, cache)
);
