"""Settings of the gateway (``MIM_GATEWAY_*`` plus the node-wide ``MIM_*``).

The gateway judges submitted objects by the node's acceptance policy, the same
:class:`relay.policy.PolicySettings` (``MIM_MIN_POW`` ...) the validators read.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from relay.policy import PolicySettings
from relay.settings import ServiceSettings

__all__ = ["GatewaySettings"]


class GatewaySettings(PolicySettings, ServiceSettings):
    """What the public Mim API needs; service fields read ``MIM_GATEWAY_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MIM_GATEWAY_")

    metrics_port: int = Field(
        9101, ge=0, le=65535, description="Port of `/metrics` and `/healthz` (0 picks a free one)."
    )
    host: str = Field("0.0.0.0", description="Address the Mim API listens on.")  # noqa: S104
    port: int = Field(8090, ge=0, le=65535, description="Port of the Mim API (0 picks a free one).")
    public_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port announced in our address (0: the listening port).",
    )
    network_head_days: int = Field(
        14,
        ge=1,
        le=28,
        validation_alias="MIM_NETWORK_HEAD_DAYS",
        description="Days of the network head that caches and POST answers cover.",
    )
    live_tail_overlap_seconds: int = Field(
        default=120,
        ge=0,
        description=(
            "POST time ranges start this long before the last cache generation: an object stamped"
            " before it may commit after the caches were read, and must still be served."
        ),
    )
    tls: bool = Field(
        default=False,
        validation_alias="MIM_TLS",
        description="Serve HTTPS with a self-signed certificate kept in the data directory.",
    )
    cache_interval_seconds: float = Field(
        300.0, gt=0, description="Pause between two regenerations of the GET caches."
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
    pool_size: int = Field(4, ge=1, description="Connections in the PostgreSQL pool.")
    gzip_min_bytes: int = Field(
        512, ge=0, description="Smallest answer gzip-compressed for clients that accept gzip."
    )
