"""Which syncer replica does what: a lease per remote and per schedule (``relay.leases``).

Any number of syncer replicas share one node's remotes. Before syncing a remote a replica takes
the remote's lease in the ``<PREFIX>_SYNCER_LEASES`` bucket and keeps it while the sync runs
(renewed every third of ``MIM_SYNCER_LEASE_SECONDS``); afterwards the lease rests for the remote's
exclusion window, so no replica syncs it again before it is due. A remote whose lease another
replica holds is passed over for now. The schedules (the network scan, the bootstrap check, the
explore visits) have a lease each, so one replica at a time runs each and their periods hold
node-wide.

A replica that dies stops renewing, and within the lease's time its remotes and schedules are taken
by the others. One that loses a lease (it paused past the lease's time, or lost NATS) has its work
cancelled; what it wrote meanwhile is harmless, as a cursor never moves backwards
(``relay.db.cursors.advance``) and everything it published is deduplicated downstream.

Asking never fails: a bucket that does not answer refuses (the work waits for a later tick), and
is logged and counted. :class:`Alone` grants everything at once, for a syncer whose work nobody
shares (the tests of the schedule).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable
from typing import Protocol, TypeVar

import structlog
from nats.js import JetStreamContext

from relay import BusError, BusUnavailable, LeaseLost
from relay.bus import Layout
from relay.leases import Lease, LeaseBucket, keep
from relay.logging import get_logger
from services.syncer import metrics

__all__ = ["Alone", "Claim", "Claims", "Shared", "remote_key"]

_T = TypeVar("_T")

_log = get_logger(__name__)


def remote_key(key: tuple[str, str, int]) -> str:
    """The lease key of a remote (``Remote.key``: host, sublocation, port): a digest, as a host
    may hold characters a key may not."""
    host, sublocation, port = key
    digest = hashlib.sha256(f"{host}\n{sublocation}\n{port}".encode()).hexdigest()
    return f"remote.{digest[:32]}"


class Claim(Protocol):
    """The right to do one piece of work now."""

    async def keep(self, work: Awaitable[_T]) -> _T:
        """Run ``work`` holding the right; ``LeaseLost`` (work cancelled) if it is lost."""
        ...

    async def done(self, rest_seconds: float) -> None:
        """The work is over: nobody does it again for ``rest_seconds`` (0: free at once)."""
        ...


class Claims(Protocol):
    """Where a replica asks for the right to sync a remote or run a schedule."""

    async def remote(
        self, key: tuple[str, str, int], what: str, *, now: bool = False
    ) -> Claim | None:
        """The right to sync the remote ``key`` (``what``: how to name it), or None while
        another replica holds it; with ``now``, also while it only rests (a sync on request)."""
        ...

    async def schedule(self, name: str) -> Claim | None:
        """The right to run schedule ``name`` now, or None while another replica holds it or it
        rests."""
        ...


class _Free:
    async def keep(self, work: Awaitable[_T]) -> _T:
        return await work

    async def done(self, rest_seconds: float) -> None:
        return None


class Alone:
    """Every claim granted: one syncer, nobody to share with."""

    async def remote(self, key: tuple[str, str, int], what: str, *, now: bool = False) -> Claim:
        return _Free()

    async def schedule(self, name: str) -> Claim:
        return _Free()


class _Held:
    def __init__(self, lease: Lease, kind: str, log: structlog.stdlib.BoundLogger) -> None:
        self._lease = lease
        self._kind = kind
        self._log = log

    async def keep(self, work: Awaitable[_T]) -> _T:
        try:
            return await keep(self._lease, work)
        except LeaseLost as exc:
            metrics.LEASES.labels(self._kind, "lost").inc()
            self._log.warning("lease_lost", lease=self._lease.key, what=self._lease.what,
                              reason=str(exc))  # fmt: skip
            raise

    async def done(self, rest_seconds: float) -> None:
        await self._lease.rest(rest_seconds)


class Shared:
    """Claims as leases in the node's syncer bucket, shared by every replica."""

    def __init__(self, bucket: LeaseBucket, holder: str, ttl: float) -> None:
        self.bucket = bucket
        self.holder = holder
        self.ttl = ttl
        self._log = _log.bind(holder=holder)

    @classmethod
    async def open(cls, js: JetStreamContext, layout: Layout, holder: str, ttl: float) -> Shared:
        """The claims of ``layout``'s syncers, asked for as ``holder``; raises ``BusError`` when
        the server cannot expire entries (nats-server before 2.11)."""
        bucket = await LeaseBucket.open(
            js,
            layout.syncer_leases_bucket,
            replicas=layout.replicas,
            description="Which syncer replica syncs each remote and runs each schedule.",
        )
        return cls(bucket, holder, ttl)

    async def remote(
        self, key: tuple[str, str, int], what: str, *, now: bool = False
    ) -> Claim | None:
        return await self._take(remote_key(key), what, "remote", over_rest=now)

    async def schedule(self, name: str) -> Claim | None:
        return await self._take(f"schedule.{name}", name, "schedule")

    async def _take(
        self, key: str, what: str, kind: str, *, over_rest: bool = False
    ) -> Claim | None:
        lease = self.bucket.lease(key, self.holder, ttl=self.ttl, what=what)
        try:
            taken = await lease.take(over_rest=over_rest)
        except (BusUnavailable, BusError) as exc:
            metrics.LEASES.labels(kind, "unavailable").inc()
            self._log.warning("lease_unavailable", lease=key, what=what, error=str(exc))
            return None
        if not taken:
            metrics.LEASES.labels(kind, "refused").inc()
            held_by = lease.other.holder if lease.other is not None else ""
            self._log.debug("lease_refused", lease=key, what=what, held_by=held_by)
            return None
        metrics.LEASES.labels(kind, "taken").inc()
        return _Held(lease, kind, self._log)
