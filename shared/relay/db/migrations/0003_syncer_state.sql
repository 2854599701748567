-- 0003: the syncer's own small values move out of node_state, which the gateway alone writes
-- (it holds the node key); each table has one writing service.
CREATE TABLE syncer_state (
    key        text        PRIMARY KEY,
    value      text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO syncer_state (key, value, updated_at)
    SELECT key, value, updated_at FROM node_state WHERE key LIKE 'syncer.%';
DELETE FROM node_state WHERE key LIKE 'syncer.%';
