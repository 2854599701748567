-- 0004: bearer tokens for submission on the public listener, kept only as digests.
-- Written by the gateway (answering its local API); read by every gateway replica.
CREATE TABLE api_tokens (
    id              text    PRIMARY KEY,
    name            text    NOT NULL,
    digest          text    NOT NULL UNIQUE,
    rate_per_minute integer NOT NULL CHECK (rate_per_minute > 0),
    created_at      bigint  NOT NULL,
    revoked_at      bigint
);
