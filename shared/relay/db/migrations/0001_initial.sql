-- 0001: the store's first schema (PROTOCOL.md §2, §13.6, §14, §15, §20.5, §20.6).
-- Timestamps that come from the protocol or are compared with it are Unix seconds (bigint).

-- Every provable object, one row per (kind, fingerprint), holding the version we keep.
CREATE TABLE objects (
    kind            text    NOT NULL,
    fingerprint     text    NOT NULL,
    body            text    NOT NULL,             -- canonical JSON of the stored version, exact
    creation        bigint  NOT NULL,
    last_update     bigint  NOT NULL DEFAULT 0,
    board           text    NOT NULL DEFAULT '',
    thread          text    NOT NULL DEFAULT '',
    parent          text    NOT NULL DEFAULT '',
    target          text    NOT NULL DEFAULT '',
    owner           text    NOT NULL DEFAULT '',  -- a Key's own fingerprint for kind 'key'
    owner_publickey text    NOT NULL DEFAULT '',  -- a Key's `key` for kind 'key'
    signed          boolean NOT NULL,
    local_arrival   bigint  NOT NULL,
    last_referenced bigint  NOT NULL,
    PRIMARY KEY (kind, fingerprint),
    CONSTRAINT objects_kind_known
        CHECK (kind IN ('board', 'thread', 'post', 'vote', 'key', 'truststate'))
);
CREATE INDEX objects_kind_last_referenced ON objects (kind, last_referenced);
CREATE INDEX objects_kind_local_arrival ON objects (kind, local_arrival);
CREATE INDEX objects_kind_creation ON objects (kind, creation);
CREATE INDEX objects_board ON objects (board) WHERE board <> '';
CREATE INDEX objects_thread ON objects (thread) WHERE thread <> '';
CREATE INDEX objects_parent ON objects (parent) WHERE parent <> '';
CREATE INDEX objects_target ON objects (target) WHERE target <> '';
CREATE INDEX objects_owner ON objects (owner) WHERE owner <> '';
CREATE INDEX objects_key_publickey ON objects (owner_publickey) WHERE kind = 'key';

-- A board's owners in the order the board lists them (§20.3); rewritten on each stored version.
CREATE TABLE board_owners (
    board           text    NOT NULL,
    position        integer NOT NULL,
    key_fingerprint text    NOT NULL,
    expiry          bigint  NOT NULL DEFAULT 0,
    level           integer NOT NULL,
    PRIMARY KEY (board, position),
    UNIQUE (board, key_fingerprint)
);

-- Known node addresses (§13.6). Third-party rows keep only where the node is.
CREATE TABLE addresses (
    location      text    NOT NULL,
    sublocation   text    NOT NULL DEFAULT '',
    port          integer NOT NULL,
    location_type integer NOT NULL DEFAULT 0,
    type          integer NOT NULL DEFAULT 0,
    body          text    NOT NULL,               -- canonical JSON of the Address as stored
    first_party   boolean NOT NULL DEFAULT false,
    last_ping     bigint  NOT NULL DEFAULT 0,
    last_sync     bigint  NOT NULL DEFAULT 0,
    local_arrival bigint  NOT NULL,
    PRIMARY KEY (location, sublocation, port)
);
CREATE INDEX addresses_recency ON addresses (last_ping DESC, last_sync DESC, local_arrival DESC);

-- Per remote node and endpoint, how far we have synced; never moves backwards (§20.5).
CREATE TABLE sync_cursors (
    node_id  text   NOT NULL,
    endpoint text   NOT NULL,
    checkin  bigint NOT NULL,
    PRIMARY KEY (node_id, endpoint)
);

-- The operator's block list: fingerprints of keys, boards, threads, posts, addresses.
CREATE TABLE blocks (
    fingerprint text        PRIMARY KEY,
    reason      text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Small node-wide values (the node key, the last cache generation, ...).
CREATE TABLE node_state (
    key        text        PRIMARY KEY,
    value      text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
