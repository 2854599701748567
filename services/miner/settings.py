"""Settings of the miner service: ``MIM_MINER_*`` plus the node-wide ``MIM_*`` values."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from relay.settings import ServiceSettings

__all__ = ["MinerSettings"]


class MinerSettings(ServiceSettings):
    """How one miner replica searches: its processes, the jobs it takes, how long they run."""

    model_config = SettingsConfigDict(env_prefix="MIM_MINER_")

    process_workers: int = Field(
        0,
        ge=0,
        validation_alias="MIM_MINER_WORKERS",
        description="Search processes of this miner (0: one per CPU); each job uses all of them.",
    )
    max_jobs: int = Field(
        16,
        ge=1,
        description="Jobs this miner runs at once; more are refused as busy and mined elsewhere.",
    )
    max_text_bytes: int = Field(
        256 * 1024,
        ge=1,
        description="Largest PoW input accepted, in UTF-8 bytes (the request must fit NATS's "
        "max payload, 1 MiB by default).",
    )
    job_limit_seconds: float = Field(
        600.0,
        gt=0,
        description="Longest a job may search before it answers with a deadline error "
        "(the reference's bailout).",
    )
    chunk_attempts: int = Field(
        50_000,
        ge=1000,
        description="Attempts per search call; cancellations and deadlines are checked between "
        "calls.",
    )
