"""Settings of the validator: its own ``MIM_VALIDATOR_*`` values and the node's acceptance policy.

The policy values are node-wide and shared with the gateway (:class:`relay.policy.PolicySettings`).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from relay.policy import PolicySettings
from relay.settings import ServiceSettings

__all__ = ["ValidatorSettings"]


class ValidatorSettings(PolicySettings, ServiceSettings):
    """Everything the validator reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="MIM_VALIDATOR_")

    metrics_port: int = Field(
        9103, ge=0, le=65535, description="Port of `/metrics` and `/healthz` (0 picks a free one)."
    )
    batch_size: int = Field(
        128, ge=1, le=4096, description="Messages fetched from the ingest stream at once."
    )
    fetch_timeout_seconds: float = Field(
        1.0, gt=0, description="How long one fetch waits for messages before trying again."
    )
    max_object_bytes: int = Field(
        1 << 20, ge=1, description="Messages larger than this are rejected without decoding."
    )
    max_deliveries: int = Field(
        20,
        ge=1,
        description="Deliveries of one message after which it is rejected (stage `delivery`):"
        " for a message that keeps coming back (its publish refused for good, a validator dying"
        " while it holds it). A publish that fails for a transient cause does not count: the"
        " validator holds the message and tries again.",
    )
    retry_delay_seconds: float = Field(
        2.0,
        ge=0,
        description="First wait before a publish that failed for a transient cause (NATS down,"
        " the accepted stream full) is tried again, doubling up to 60 s; also the redelivery"
        " delay after a refused publish.",
    )
    publish_timeout_seconds: float = Field(
        5.0, gt=0, description="How long to wait for JetStream to confirm one publish."
    )
    rejected_object_bytes: int = Field(
        65536,
        ge=0,
        description="Bytes of a rejected message kept on the rejected stream for inspection.",
    )
    blocklist_refresh_seconds: float = Field(
        5.0,
        gt=0,
        description="Full reload period of the block list (changes also arrive at once by watch).",
    )
