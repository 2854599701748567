"""Keeping the GET caches fresh: a new tree every ``cache_interval_seconds``, supervised.

A generation (:meth:`~services.gateway.state.Gateway.regenerate`) reads the head from the store,
builds the tree in a worker thread and swaps it in.
A generation that fails, for whatever reason, is logged (``caches_generation_failed`` with the
error), counted (``mim_gateway_cache_failures_total``) and tried again after a pause that doubles
up to the interval; the old tree keeps being served meanwhile. After
``cache_failures_unhealthy`` failures in a row the gateway reports unhealthy (``/healthz`` 503,
reason ``caches``) until a generation succeeds again. The age of the tree being served is
``mim_gateway_cache_generated_timestamp_seconds``.
"""

from __future__ import annotations

from relay.logging import get_logger
from relay.runner import Context
from services.gateway import metrics
from services.gateway.state import Gateway

__all__ = ["keep_fresh"]

_RETRY_MIN_SECONDS = 1.0

_log = get_logger(__name__)


async def keep_fresh(ctx: Context, gw: Gateway) -> None:
    """Regenerate every interval until the service stops; failures never end the loop."""
    interval = gw.settings.cache_interval_seconds
    failures = 0
    pause = interval
    while not await ctx.sleep(pause):
        try:
            await gw.regenerate()
        except Exception as exc:
            failures += 1
            pause = min(interval, _RETRY_MIN_SECONDS * 2 ** (failures - 1))
            metrics.CACHE_FAILURES.inc()
            _log.error(
                "caches_generation_failed", error=repr(exc), failures=failures, retry_s=pause,
                exc_info=exc,
            )  # fmt: skip
            if failures >= gw.settings.cache_failures_unhealthy:
                ctx.set_problem("caches", f"{failures} cache generations failed in a row")
            continue
        if failures:
            _log.info("caches_recovered", after_failures=failures)
        failures, pause = 0, interval
        ctx.set_problem("caches", None)
