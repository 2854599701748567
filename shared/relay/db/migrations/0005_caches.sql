-- 0005: the GET caches (§11.6) leave the gateway processes. One gateway at a time builds them
-- (the one holding the builder lease); every gateway replica serves them from here.

-- Every file of every cache, gzip-compressed, by folder (`v0/c0/posts/cache_<id>`) and name
-- (`0.json`, `index/0.json`, `manifest/0.json`). A cache, once written, never changes.
CREATE TABLE cache_files (
    folder  text    NOT NULL,
    name    text    NOT NULL,
    gzipped bytea   NOT NULL,
    size    integer NOT NULL,  -- bytes of the plain file
    made_at bigint  NOT NULL,
    PRIMARY KEY (folder, name)
);
-- the files are compressed already: no second compression by TOAST
ALTER TABLE cache_files ALTER COLUMN gzipped SET STORAGE EXTERNAL;

-- The caches of each endpoint, from the generation that first listed one to the one that
-- retired it (merged into a larger cache, or ended before the network head); a retired cache's
-- files stay a while for remotes that read the index before.
CREATE TABLE cache_slices (
    endpoint       text    NOT NULL,  -- v0/c0/posts, v0/addresses
    cache          text    NOT NULL,  -- cache_<id>
    starts_from    bigint  NOT NULL,
    ends_at        bigint  NOT NULL,
    objects        integer NOT NULL,
    pages          integer NOT NULL,  -- entity pages <N>.json
    index_pages    integer NOT NULL,  -- index/<N>.json
    manifest_pages integer NOT NULL,  -- manifest/<N>.json
    bytes          bigint  NOT NULL,  -- plain bytes of all its files
    listed         bigint  NOT NULL,
    retired        bigint,
    retired_at     bigint,
    PRIMARY KEY (endpoint, cache)
);

-- One row per generation: the caches hold every object whose time is before `covered_to`.
CREATE TABLE cache_generations (
    generation bigint PRIMARY KEY,
    covered_to bigint NOT NULL,
    made_at    bigint NOT NULL
);

-- Each generation's signed `index.json` per endpoint, gzip-compressed.
CREATE TABLE cache_indexes (
    generation bigint  NOT NULL REFERENCES cache_generations ON DELETE CASCADE,
    endpoint   text    NOT NULL,
    gzipped    bytea   NOT NULL,
    size       integer NOT NULL,
    PRIMARY KEY (generation, endpoint)
);
