"""Remotes and their leases (PROTOCOL.md §11.2), held for the whole node, not one replica.

A remote is whoever a request comes from: an IPv4 address, or the IPv6 prefix of
``lease_ipv6_prefix`` bits (a /64 by default, which one host can fill with addresses), as
:func:`remote_key` spells it. Two lease classes, each a bucket of the node's shared state
(:mod:`relay.kv`), with a bound on distinct remotes and a time to live after the last use:

- ``main``: the Mim API, ``max_remotes`` remotes (§16: 10), ``remote_lease_seconds`` (60 s);
- ``ping``: ``/v0/ping/``, ``ping_max_remotes`` (100), ``ping_lease_seconds`` (10 s).

A replica that has written a remote's lease trusts it for ``lease_refresh_seconds`` before it
writes it again, so a busy remote costs one write per interval, not one per request. A remote
also has at most ``max_requests_per_remote`` requests in flight: per replica for every request,
and across replicas for those that reach the app (a slot per request in the ``INFLIGHT`` bucket,
given back when it is answered, or expiring ``request_timeout_seconds`` later if the replica
dies). Prebuilt cache files are answered in microseconds and keep to the replica's count only.

:meth:`Leases.enter` gives a :class:`Ticket` or the reason it was refused; ``leave`` gives it back.
:meth:`Leases.held` is its synchronous shortcut for a request that needs no shared slot from a
remote this replica holds a fresh lease for, the common case of a cached GET; ``release`` gives
such a ticket back.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from relay import BusError, BusUnavailable, StateFull
from relay.kv import Bucket
from relay.logging import get_logger
from services.gateway import metrics

__all__ = ["LeaseClass", "LeaseName", "Leases", "Refusal", "Ticket", "remote_key"]

LeaseName = Literal["main", "ping"]
_SLOT_GRACE_SECONDS: Final = 5.0  # a slot outlives its request's timeout by this much
_PRUNE_EVERY: Final = 1024  # local entries are pruned after this many new ones
_KEYS_CACHED: Final = 4096

_log = get_logger(__name__)


@functools.lru_cache(maxsize=_KEYS_CACHED)
def remote_key(host: str, ipv6_prefix: int) -> str:
    """The lease key of ``host``: ``4.<address>`` or ``6.<network hex>.<prefix>``; a host that is
    no IP address (a Unix socket peer) is one remote, ``other``. (Kept for the most recent hosts:
    parsing an address costs more than the rest of a cached GET's lease.)"""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "other"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        return f"4.{ip}"
    network = ipaddress.IPv6Network((ip, ipv6_prefix), strict=False)
    return f"6.{network.network_address.packed.hex()}.{ipv6_prefix}"


@dataclass(frozen=True, slots=True)
class LeaseClass:
    """One kind of lease: its bucket (bounded to its number of remotes) and lease time."""

    name: LeaseName
    bucket: Bucket
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request got no lease: ``status`` (429 or 503), the rule, one line, and the error
    behind a 503 (for the log, not the client)."""

    status: int
    rule: str
    reason: str
    cause: str = ""


@dataclass(slots=True)
class Ticket:
    """A request's hold on its remote: give it back with :meth:`Leases.leave`."""

    lease: LeaseName
    remote: str
    slot: int | None = None  # the shared in-flight slot's revision, when it holds one


@dataclass
class _Local:
    """This replica's view of one lease class."""

    refreshed: dict[str, float] = field(default_factory=dict)  # remote -> monotonic time
    inflight: dict[str, int] = field(default_factory=dict)
    added: int = 0


class Leases:
    """The lease classes of one gateway replica, over the node's shared buckets."""

    def __init__(
        self,
        classes: dict[LeaseName, LeaseClass],
        inflight: Bucket,
        *,
        max_inflight: int,
        refresh_seconds: float,
        slot_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._classes = classes
        self._inflight = inflight
        self._max_inflight = max_inflight
        self._refresh = refresh_seconds
        self._slot_seconds = slot_seconds + _SLOT_GRACE_SECONDS
        self._clock = clock
        self._local: dict[LeaseName, _Local] = {name: _Local() for name in classes}

    async def enter(self, lease: LeaseName, remote: str, *, shared: bool) -> Ticket | Refusal:
        """Take a lease of ``lease`` for ``remote`` and an in-flight place (``shared``: one
        across replicas too); a :class:`Refusal` when the remote may not be served now."""
        local = self._local[lease]
        if local.inflight.get(remote, 0) >= self._max_inflight:
            return self._refused(lease, "inflight", 429, "too many requests in flight")
        try:
            if not await self._leased(lease, remote, local):
                return self._refused(lease, "remotes", 429, "too many remotes")
            local.inflight[remote] = local.inflight.get(remote, 0) + 1
            ticket = Ticket(lease, remote)
            if shared:
                ticket.slot = await self._slot(f"{lease}.{remote}")
                if ticket.slot is None:
                    self.release(ticket)
                    return self._refused(lease, "inflight", 429, "too many requests in flight")
        except (BusUnavailable, BusError) as exc:  # logged with the 503 it is answered
            return self._refused(lease, "unavailable", 503, "lease state unavailable", str(exc))
        return ticket

    def held(self, lease: LeaseName, remote: str) -> Ticket | None:
        """A ticket without a shared slot, without waiting, when this replica refreshed
        ``remote``'s lease less than ``lease_refresh_seconds`` ago and it has room in flight here;
        None when :meth:`enter` must decide."""
        local = self._local[lease]
        if not self._fresh(local, remote, self._clock()):
            return None
        count = local.inflight.get(remote, 0)
        if count >= self._max_inflight:
            return None
        local.inflight[remote] = count + 1
        return Ticket(lease, remote)

    async def leave(self, ticket: Ticket) -> None:
        """Give back what ``ticket`` holds."""
        self.release(ticket)
        if ticket.slot is not None:
            try:
                await self._inflight.drop(ticket.slot)
            except (BusUnavailable, BusError) as exc:  # it expires on its own
                _log.warning("inflight_slot_not_released", error=str(exc))

    def release(self, ticket: Ticket) -> None:
        """Give back a ticket without a shared slot (from :meth:`held`, or ``enter`` unshared)."""
        local = self._local[ticket.lease]
        left = local.inflight.get(ticket.remote, 1) - 1
        if left > 0:
            local.inflight[ticket.remote] = left
        else:
            local.inflight.pop(ticket.remote, None)

    async def _leased(self, lease: LeaseName, remote: str, local: _Local) -> bool:
        """Whether ``remote`` holds (or now took) a lease of ``lease``."""
        now = self._clock()
        if self._fresh(local, remote, now):
            return True
        cls = self._classes[lease]
        try:
            if await cls.bucket.claim(remote, ttl=cls.lease_seconds) is None:
                await cls.bucket.put(remote, ttl=cls.lease_seconds)  # held: renew it
        except StateFull:
            return False
        local.refreshed[remote] = now
        local.added += 1
        if local.added >= _PRUNE_EVERY:
            local.added = 0
            local.refreshed = {r: t for r, t in local.refreshed.items() if now - t < self._refresh}
        return True

    def _fresh(self, local: _Local, remote: str, now: float) -> bool:
        """Whether this replica wrote ``remote``'s lease less than the refresh interval ago."""
        last = local.refreshed.get(remote)
        return last is not None and now - last < self._refresh

    async def _slot(self, holder: str) -> int | None:
        """The revision of a free in-flight slot of ``holder`` (lease and remote) now taken, or
        None if all are."""
        for n in range(self._max_inflight):
            try:
                taken = await self._inflight.claim(f"{holder}.{n}", ttl=self._slot_seconds)
            except StateFull:
                return None
            if taken is not None:
                return taken
        return None

    def _refused(
        self, lease: LeaseName, reason: str, status: int, text: str, cause: str = ""
    ) -> Refusal:
        metrics.LEASES_REFUSED.labels(lease, reason).inc()
        return Refusal(status, "http.lease", text, cause)
