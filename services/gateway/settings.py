"""Settings of the gateway (``MIM_GATEWAY_*`` plus the node-wide ``MIM_*``).

The gateway judges submitted objects by the node's acceptance policy, the same
:class:`relay.policy.PolicySettings` (``MIM_MIN_POW`` ...) the validators read, and checks the
addresses it learns under the node's :class:`relay.location.AddressSettings`. Every bound a
stranger meets at the edge is one of the fields below; ``docs/security.md`` says what each
protects.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from relay.location import AddressSettings
from relay.policy import PolicySettings
from relay.settings import LocalApiSettings, NetworkSettings, PoolSettings, ServiceSettings

__all__ = ["GatewaySettings"]


class GatewaySettings(
    PolicySettings,
    AddressSettings,
    LocalApiSettings,
    NetworkSettings,
    PoolSettings,
    ServiceSettings,
):
    """What the public Mim API needs; service fields read ``MIM_GATEWAY_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MIM_GATEWAY_")

    metrics_port: int = Field(
        9101, ge=0, le=65535, description="Port of `/metrics` and `/healthz` (0 picks a free one)."
    )
    live_tail_overlap_seconds: int = Field(
        default=120,
        ge=0,
        description=(
            "Longest an object's commit may lag its stamp: a cache generation covers up to this"
            " long before it, and POST time ranges start this long before what the caches cover."
        ),
    )
    reuse_port: bool = Field(
        False,
        description=(
            "Let several gateway replicas on this host listen on one port, the kernel spreading"
            " connections (`mimrelay up --gateways N` sets it)."
        ),
    )
    access_log: bool = Field(
        False,
        description=(
            "Write a log line per request answered. Off by default: each route's requests,"
            " statuses and latency are in `/metrics`, and a line per request is a flood under"
            " hostile traffic."
        ),
    )
    cache_interval_seconds: float = Field(
        300.0, gt=0, description="Pause between two generations of the GET caches."
    )
    cache_failures_unhealthy: int = Field(
        3, ge=1, description="Cache generations failing in a row after which `/healthz` says 503."
    )
    cache_lease_seconds: float = Field(
        30.0,
        ge=1,
        description=(
            "Lease of the one replica that builds the caches; when it dies, another takes over"
            " within this."
        ),
    )
    cache_merge_after_seconds: int = Field(
        86_400,
        ge=0,
        description=(
            "A six-hour block's caches are merged into one once the block ended this long ago"
            " (remotes syncing more often never read the merged cache)."
        ),
    )
    cache_memory_bytes: int = Field(
        64 << 20,
        ge=0,
        description=(
            "Bytes of cache files each replica keeps in memory; the rest is read from PostgreSQL"
            " when asked."
        ),
    )
    max_body_bytes: int = Field(
        4 << 20, ge=1024, description="Largest request body accepted; larger ones get 413."
    )
    max_remotes: int = Field(
        10,
        ge=1,
        description="Distinct remotes served at once on the Mim API, node-wide (§11.2 leases).",
    )
    remote_lease_seconds: float = Field(
        60.0, gt=0, description="How long a remote keeps its lease after its last request."
    )
    max_requests_per_remote: int = Field(
        8,
        ge=1,
        description="Requests one remote may have in flight (node-wide for those the app answers,"
        " per replica for cache files); more get 429.",
    )
    lease_ipv6_prefix: int = Field(
        64,
        ge=32,
        le=128,
        description="IPv6 remotes are leased by this prefix (one host can hold a whole /64).",
    )
    ping_max_remotes: int = Field(
        100, ge=1, description="Distinct remotes served at once on `/v0/ping/` (§11.2)."
    )
    ping_lease_seconds: float = Field(
        10.0, gt=0, description="How long a ping lease lasts after its last request (§11.2)."
    )
    lease_refresh_seconds: float = Field(
        5.0,
        gt=0,
        description="How long a replica trusts a lease it wrote before writing it again.",
    )
    lease_retry_after_seconds: int = Field(
        10, ge=1, description="`Retry-After` sent to a remote refused a lease (429)."
    )
    request_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest time one request may take before it is answered 503."
    )
    post_min_pow: int = Field(
        15, ge=1, le=63, description="Least proof of work a POST request must carry (§11.4)."
    )
    nonce_max_entries: int = Field(
        500_000,
        ge=1000,
        description="POST nonces (and per-key counts) remembered node-wide; past it POSTs get 503.",
    )
    nonce_max_per_key: int = Field(
        358, ge=1, description="POST requests one node key may send in 50 minutes (§16)."
    )
    filter_max_values: int = Field(
        64, ge=1, description="Values in one POST filter (§9.3: 64 fingerprints); more get 400."
    )
    post_answer_max_objects: int = Field(
        20_000,
        ge=100,
        description="Objects one POST answer may hold (embeds included); more get 503.",
    )
    post_answer_max_bytes: int = Field(
        32 << 20,
        ge=1 << 20,
        description="Bytes of stored objects one POST answer may hold; more get 503.",
    )
    containers_max: int = Field(
        1000, ge=1, description="POST answer containers kept node-wide (an hour each, §11.7)."
    )
    containers_max_bytes: int = Field(
        1 << 30, ge=1 << 20, description="Bytes of POST answer containers kept node-wide."
    )
    busy_retry_after_seconds: int = Field(
        30,
        ge=1,
        description="`Retry-After` sent with a 503 when shared state or an answer is at its bound.",
    )
    public_submit: bool = Field(
        False,
        description="Take `POST /api/submit` on the public listener without a token (objects"
        " only, at the node's proof-of-work minimum; no addresses).",
    )
    token_refresh_seconds: float = Field(
        5.0, gt=0, description="How often the tokens are re-read; a revoked one stops within it."
    )
    token_rate_per_minute: int = Field(
        600, ge=1, description="Objects one token may submit per minute, unless it names its own."
    )
    tokens_max: int = Field(100, ge=1, description="Tokens that may exist at once.")
    max_connections: int = Field(
        1000, ge=1, description="Open HTTP connections per listener; more are answered 503."
    )
    max_header_bytes: int = Field(
        16384, ge=1024, description="Bytes of a request line and headers; more get 431."
    )
    max_headers: int = Field(64, ge=8, description="Header lines of one request; more get 431.")
    max_url_bytes: int = Field(4096, ge=256, description="Bytes of a request URL; more get 414.")
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="Time from a request's first byte to its last header (408)."
    )
    idle_timeout_seconds: float = Field(
        15.0, gt=0, description="A connection that sends nothing this long is closed."
    )
    write_timeout_seconds: float = Field(
        30.0, gt=0, description="A client that reads nothing of our answer this long is cut off."
    )
    backlog: int = Field(
        2048, ge=1, description="Connections the kernel queues before the gateway accepts them."
    )
    trusted_proxies: str = Field(
        "",
        description="Addresses of reverse proxies whose `X-Forwarded-For` names the remote"
        " (comma-separated addresses or networks, `*` for any; empty: none, the connection's"
        " address is the remote).",
    )
    submit_max_objects: int = Field(
        1000, ge=1, description="Objects accepted in one `POST /api/submit`."
    )
    submit_retry_after_seconds: int = Field(
        5, ge=1, description="`Retry-After` sent when the ingest stream is full."
    )
    gzip_min_bytes: int = Field(
        512, ge=0, description="Smallest answer gzip-compressed for clients that accept gzip."
    )
