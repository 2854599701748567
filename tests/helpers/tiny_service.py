"""A minimal service on the shared runner, run as a subprocess by the runner tests.

``python -m tests.helpers.tiny_service``; ``MIM_TINY_*`` variables choose what it does.
"""

from __future__ import annotations

import asyncio

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from relay import memory
from relay.runner import Context, run_service
from relay.settings import ServiceSettings


class TinySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MIM_TINY_")

    job_seconds: float = Field(
        default=0.0, ge=0, description="Length of the one job started at start-up."
    )
    use_nats: bool = Field(default=False, description="Connect to NATS before reporting ready.")
    use_postgres: bool = Field(
        default=False, description="Open a PostgreSQL pool before reporting ready."
    )
    fail_after_ready: bool = Field(default=False, description="Raise from main once ready.")
    burst_mib: int = Field(
        default=0, ge=0, description="MiB allocated in small blocks and freed once ready."
    )


async def _job(ctx: Context, seconds: float) -> None:
    ctx.log.info("job_started", seconds=seconds)
    await asyncio.sleep(seconds)
    ctx.counters["handled"] += 1
    ctx.log.info("job_finished")


def _burst(ctx: Context, mib: int) -> None:
    """Allocate ``mib`` MiB in 4 KiB blocks, then one more, and free the first ones: the freed
    memory lies below a live block, where ``free`` alone does not hand it back."""
    blocks = [bytearray(4096) for _ in range(mib * 256)]
    _PINNED.append(bytearray(4096))
    peak = memory.resident_bytes()
    del blocks
    ctx.log.info("burst_freed", mib=mib, peak=peak, resident=memory.resident_bytes())


_PINNED: list[bytearray] = []


async def main(ctx: Context) -> None:
    settings = ctx.settings
    assert isinstance(settings, TinySettings)
    if settings.use_nats:
        await ctx.nats()
    if settings.use_postgres:
        await ctx.pool(max_size=2)
    ctx.mark_ready()
    if settings.fail_after_ready:
        raise RuntimeError("tiny service failed on purpose")
    if settings.burst_mib:
        _burst(ctx, settings.burst_mib)
    if settings.job_seconds:
        ctx.spawn(_job(ctx, settings.job_seconds), name="job")


if __name__ == "__main__":
    raise SystemExit(run_service("tiny", TinySettings, main))
