"""Keeping the GET caches fresh: one replica builds, every replica follows; supervised.

:func:`keep_lease` holds the builder lease (``relay.leases``, bucket
``Layout.cache_builder_bucket``) when it is free, renewing it three times per
``cache_lease_seconds``; while it holds it the replica builds (``mim_gateway_cache_builder`` is
1, and ``cache_builder_acquired`` / ``cache_builder_lost`` are logged). The other replicas ask
for it every second. When the builder dies, its lease lapses within ``cache_lease_seconds`` and
another replica takes over at its next ask. On stop the lease is given up at once.

:func:`keep_fresh` checks every second: the builder runs a generation
(:meth:`~services.gateway.state.Gateway.regenerate`) every ``cache_interval_seconds``; every
replica loads the latest generation as soon as it is published. A generation or a load that
fails, for whatever reason, is logged (``caches_generation_failed`` with the error), counted
(``mim_gateway_cache_failures_total``) and tried again after a pause that doubles up to the
interval; the caches already loaded keep being served meanwhile. When a dependency the service
watches (PostgreSQL, NATS) was seen down during such a pause and answers again, the pause ends at
the next tick: the gateway does not stay unhealthy for up to an interval after its database is
back. After
``cache_failures_unhealthy`` failures in a row the gateway reports unhealthy (``/healthz`` 503,
reason ``caches``) until one succeeds again. A generation another builder published first
(``Superseded``: two replicas briefly both held the lease) is no failure.
"""

from __future__ import annotations

import time

from relay.db.caches import Superseded
from relay.leases import Lease, LeaseBucket, holder_name
from relay.logging import get_logger
from relay.runner import Context
from services.gateway import metrics
from services.gateway.state import Gateway

__all__ = ["keep_fresh", "keep_lease", "open_lease", "set_building"]

_RETRY_MIN_SECONDS = 1.0
_TICK_SECONDS = 1.0
_ASK_SECONDS = 1.0  # how often a replica without the lease asks for it
_LEASE_NAME = "builder"

_log = get_logger(__name__)


async def open_lease(gw: Gateway) -> Lease:
    """This replica's claim on the builder lease (the bucket made if missing)."""
    leases = await LeaseBucket.open(
        gw.nc.jetstream(), gw.layout.cache_builder_bucket, replicas=gw.layout.replicas
    )
    ttl = gw.settings.cache_lease_seconds
    return leases.lease(_LEASE_NAME, holder_name(), ttl=ttl, what="build the caches")


def set_building(gw: Gateway, held: bool) -> None:
    """Record whether this replica holds the builder lease."""
    if held != gw.building:
        _log.info("cache_builder_acquired" if held else "cache_builder_lost")
    gw.building = held
    metrics.CACHE_BUILDER.set(1 if held else 0)


async def keep_lease(ctx: Context, gw: Gateway, lease: Lease) -> None:
    """Hold the builder lease whenever it is free, until the service stops; then give it up."""
    renew = gw.settings.cache_lease_seconds / 3
    try:
        while True:
            try:
                held = await lease.take()
            except Exception as exc:
                _log.warning("cache_builder_lease_failed", error=repr(exc))
                held = False
            set_building(gw, held)
            if await ctx.sleep(renew if held else min(_ASK_SECONDS, renew)):
                return
    finally:
        set_building(gw, False)
        await lease.release()


class _Failures:
    """Failures in a row of the upkeep, and the pause before the next try."""

    def __init__(self, ctx: Context, gw: Gateway) -> None:
        self.ctx, self.gw, self.count = ctx, gw, 0

    def failed(self, exc: Exception) -> float:
        self.count += 1
        pause = min(
            self.gw.settings.cache_interval_seconds,
            _RETRY_MIN_SECONDS * float(2 ** (self.count - 1)),
        )
        metrics.CACHE_FAILURES.inc()
        _log.error(
            "caches_generation_failed", error=repr(exc), failures=self.count, retry_s=pause,
            exc_info=exc,
        )  # fmt: skip
        if self.count >= self.gw.settings.cache_failures_unhealthy:
            self.ctx.set_problem("caches", f"{self.count} cache generations failed in a row")
        return pause

    def succeeded(self) -> None:
        if self.count:
            _log.info("caches_recovered", after_failures=self.count)
        self.count = 0
        self.ctx.set_problem("caches", None)


async def keep_fresh(ctx: Context, gw: Gateway) -> None:
    """Build every interval while holding the lease, follow the latest generation always;
    failures never end the loop."""
    interval = gw.settings.cache_interval_seconds
    failures = _Failures(ctx, gw)
    built_at = time.monotonic() if gw.building else float("-inf")  # the first ran at start
    wait_until = 0.0
    saw_down = False  # a dependency was down during the current pause
    while not await ctx.sleep(min(_TICK_SECONDS, interval)):
        now = time.monotonic()
        if not gw.building:
            built_at = float("-inf")  # a replica that takes over builds at once
        if now < wait_until:
            down = ctx.dependencies.problem() is not None
            saw_down = saw_down or down
            if down or not saw_down:
                continue
            _log.info("caches_retry_early", reason="dependency back")
        saw_down = False
        try:
            if gw.building and now - built_at >= interval:
                built_at = now
                await gw.regenerate()
            else:
                await gw.caches.refresh()
        except Superseded as exc:
            _log.warning("caches_superseded", reason=str(exc))
        except Exception as exc:
            wait_until = time.monotonic() + failures.failed(exc)
            saw_down = ctx.dependencies.problem() is not None
            built_at = float("-inf")  # after the pause, try the generation again
            continue
        failures.succeeded()
