"""Settings of the gateway (``MIM_GATEWAY_*`` plus the node-wide ``MIM_*``).

The gateway judges submitted objects by the node's acceptance policy, the same
:class:`relay.policy.PolicySettings` (``MIM_MIN_POW`` ...) the validators read.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from relay.policy import PolicySettings
from relay.settings import NetworkSettings, PoolSettings, ServiceSettings

__all__ = ["GatewaySettings"]


class GatewaySettings(PolicySettings, NetworkSettings, PoolSettings, ServiceSettings):
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
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description=(
            "Reverse proxies trusted to name the remote in `X-Forwarded-For` (comma-separated"
            " addresses, `*` for any); a request from anyone else is from its own address."
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
        10, ge=1, description="Distinct remotes served at once on the Mim API (§11.2 leases)."
    )
    remote_lease_seconds: float = Field(
        60.0, gt=0, description="How long a remote keeps its lease after its last request."
    )
    max_requests_per_remote: int = Field(
        8, ge=1, description="Requests one remote may have in flight; more get 429."
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
    submit_max_objects: int = Field(
        1000, ge=1, description="Objects accepted in one `POST /api/submit`."
    )
    submit_retry_after_seconds: int = Field(
        5, ge=1, description="`Retry-After` sent when the ingest stream is full."
    )
    gzip_min_bytes: int = Field(
        512, ge=0, description="Smallest answer gzip-compressed for clients that accept gzip."
    )
