"""Settings of the store service (``MIM_STORE_*`` plus the node-wide ``MIM_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from relay.location import AddressSettings
from relay.settings import LeaseSettings, NetworkSettings, PoolSettings, ServiceSettings

__all__ = ["StoreSettings"]


class StoreSettings(AddressSettings, NetworkSettings, LeaseSettings, PoolSettings, ServiceSettings):
    """What one store replica needs; every field reads ``MIM_STORE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MIM_STORE_")

    metrics_port: int = Field(
        9105, ge=0, le=65535, description="Port of `/metrics` and `/healthz` (0 picks a free one)."
    )
    batch_size: int = Field(
        256, ge=1, le=4096, description="Accepted objects fetched and written in one transaction."
    )
    fetch_timeout_seconds: float = Field(
        1.0, gt=0, description="How long one fetch waits for messages before trying again."
    )
    address_table_max: int = Field(
        1000, ge=1, description="Addresses kept; the table is pruned to the most recently seen."
    )
    retry_min_seconds: float = Field(
        0.2, gt=0, description="First pause after a database error; doubles up to the maximum."
    )
    retry_max_seconds: float = Field(
        5.0, gt=0, description="Longest pause between two tries after database errors."
    )
    collect_interval_seconds: float = Field(
        3600.0, gt=0, description="Pause between two retention runs (§20.6), node-wide."
    )
