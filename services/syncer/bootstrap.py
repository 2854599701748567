"""The bootstrap check (PROTOCOL.md §11.3 ``/v0/bootstrappers``, §13.3).

When the last successful bootstrap is older than ``bootstrap_interval_seconds`` (the reference's
360 minutes), the scheduler asks :meth:`Bootstrap.discover` for the online bootstrappers: every
``MIM_BOOTSTRAP`` remote is asked for ``GET /v0/bootstrappers`` (a signed page, verified; the
remote itself counts when it declares type 3 or 254), the addresses found (at most 99) go to the
ingest stream like any address a remote gives us, so they are stored third-party, and each is
pinged; those that answer are stored first-party and returned. The scheduler syncs each of them
(which excludes it for its rest window) and calls :meth:`Bootstrap.done`: when at least one sync
succeeded the time is written to ``syncer_state`` (``syncer.last_bootstrap``), so a restarted syncer
remembers it; otherwise the check waits ``bootstrap_retry_seconds`` before trying again. The time is
read afresh at each check, so every syncer replica sees a round another one ran.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Final

import asyncpg

from mim import canonical
from mim.entities import Address
from mim.nodes import NodeType
from relay import RelayError
from relay.bus import Layout
from relay.db import cursors
from relay.health import DATABASE_FAILURES
from relay.location import AddressRules
from relay.logging import get_logger
from relay.publisher import Publisher
from relay.submit import submit_many
from services.syncer.check import Broken, decode, placed_at
from services.syncer.client import Client, FetchError
from services.syncer.peers import Remote, remote_of
from services.syncer.scan import Pinger

__all__ = ["BOOTSTRAPPER_TYPES", "MAX_BOOTSTRAPPERS", "Bootstrap"]

BOOTSTRAPPER_TYPES: Final = frozenset({NodeType.LIVE_BOOTSTRAP, NodeType.STATIC_BOOTSTRAP})
MAX_BOOTSTRAPPERS: Final = 99  # the reference's bound on one answer (§13.3)


_log = get_logger(__name__)


class Bootstrap:
    """Finds bootstrappers through the ``MIM_BOOTSTRAP`` remotes and remembers when it did."""

    def __init__(
        self,
        remotes: Iterable[Remote],
        client: Client,
        pool: asyncpg.Pool,
        publisher: Publisher,
        layout: Layout,
        pinger: Pinger,
        *,
        interval_seconds: float = 360 * 60.0,
        retry_seconds: float = 600.0,
        page_size: int = 100,
        rules: AddressRules | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.remotes = list(remotes)
        self._client = client
        self._pool = pool
        self._publisher = publisher
        self._layout = layout
        self._pinger = pinger
        self._interval = interval_seconds
        self._retry = retry_seconds
        self._page_size = page_size
        self._rules = rules or AddressRules()
        self._clock = clock
        self._last = 0  # Unix time of the last success we know of
        self._retry_at = 0.0  # monotonic

    async def last(self) -> int:
        """Unix time of the last successful bootstrap, by any replica (0: never)."""
        value = await cursors.get_state(self._pool, cursors.LAST_BOOTSTRAP)
        self._last = max(self._last, int(value) if value and value.isdigit() else 0)
        return self._last

    async def due(self) -> bool:
        """Bootstrap remotes are set, the last success is old, and no failure is resting."""
        if not self.remotes or self._clock() < self._retry_at:
            return False
        try:
            last = await self.last()
        except DATABASE_FAILURES as exc:
            _log.warning("bootstrap_state_unreadable", error=repr(exc))
            self._retry_at = self._clock() + self._retry
            return False
        return time.time() - last >= self._interval

    async def discover(self) -> list[Remote]:
        """The bootstrappers the bootstrap remotes name that answer a ping now."""
        found = await asyncio.gather(*(self._bootstrappers(r) for r in self.remotes))
        chosen: dict[tuple[str, str, int], Remote] = {}
        addresses: list[Address] = []
        for answer in found:
            for remote, address in answer:
                if remote.key not in chosen and len(chosen) < MAX_BOOTSTRAPPERS:
                    chosen[remote.key] = remote
                    addresses.append(address)
        await self._store(addresses)
        pings = await self._pinger.ping_all(list(chosen.values()), self._page_size)
        online = [p.remote for p in pings if p.ok]
        _log.info(
            "bootstrappers_found",
            named=len(chosen),
            online=len(online),
            remotes=[str(r) for r in online],
        )
        return online

    async def done(self, synced: int) -> float:
        """Record a bootstrap in which ``synced`` bootstrappers synced; none: try again after
        the retry pause, which this returns (0 after a success: the stored time says when)."""
        if not synced:
            self._retry_at = self._clock() + self._retry
            _log.info("bootstrap_unsuccessful", retry_s=self._retry)
            return self._retry
        now = int(time.time())
        self._last = now  # in this process at least, even if the store cannot keep it
        rest = 0.0
        try:
            await cursors.set_state(self._pool, cursors.LAST_BOOTSTRAP, str(now))
        except DATABASE_FAILURES as exc:
            _log.warning("bootstrap_state_not_saved", error=repr(exc))
            rest = self._interval  # other replicas cannot read it: rest the round's lease
        _log.info("bootstrap_finished", synced=synced)
        return rest

    async def _bootstrappers(self, remote: Remote) -> list[tuple[Remote, Address]]:
        """Where to dial each bootstrapper ``remote`` names, with the address to store."""
        try:
            status, data = await self._client.request(
                remote, "GET", "v0/bootstrappers", page="bootstrappers"
            )
        except FetchError as exc:
            _log.info("bootstrappers_unavailable", peer=str(remote), reason=exc.reason)
            return []
        if status != 200:
            _log.info("bootstrappers_unavailable", peer=str(remote), reason=f"status {status}")
            return []
        try:
            page = decode(data, expect_key="")
        except Broken as exc:
            _log.warning("bootstrappers_unavailable", peer=str(remote), reason=exc.reason)
            return []
        if page.endpoint != "bootstrappers":
            _log.warning("bootstrappers_unavailable", peer=str(remote), reason="endpoint")
            return []
        named: list[tuple[Remote, Address]] = []
        if page.address.type in BOOTSTRAPPER_TYPES:  # the responder is one itself (§13.3)
            named.append((remote, placed_at(page.address, remote)))
        for address in page.response.addresses or ():
            where = remote_of(address, self._rules)
            if where is not None:
                named.append((where, address))
        return named

    async def _store(self, addresses: list[Address]) -> None:
        """Hand the addresses to the ingest stream, where they are stored third-party (§13.6)."""
        objects = [("address", canonical.encode(a)) for a in addresses]
        results = await submit_many(self._publisher, self._layout, objects, source="peer")
        refused = [r for r in results if isinstance(r, RelayError)]
        if refused:
            _log.warning("bootstrappers_not_stored", error=str(refused[0]), count=len(refused))
