"""Pings and the network scan (PROTOCOL.md §11.3, §13.1, §13.2, §13.6).

A ping is ``GET /v0/ping/node``: the remote's signed node page, verified as the sync verifies it
(:func:`services.syncer.check.node_page`). Older nodes answer 204 there, and a plain web server
holding a static node's files answers 404, so either falls back to ``GET /v0/node``. A remote
that answers is stored first-party, with what it says of itself at the place we dialled, and its
last successful ping is now (a static node's is its page time, as in the sync's check).

The scan pings every stored address, at most ``address_read_max`` of them, newest ping or sync
first, ``scan_page_size`` at once, and skips any address pinged in the last ``scan_skip_seconds``:
answered (its stored last ping says so) or not (this process remembers its failed attempts, so
a dead address is not dialled again and again either). It runs every ``scan_interval_seconds``
and, through :meth:`Scanner.scan_if_stale`, before a scout when the last one is older than that.
Two scans never overlap, nor do two replicas' scans: a scan holds the ``scan`` schedule lease
(:mod:`services.syncer.claims`) while it runs and leaves it resting for the interval after, and a
replica refused the lease asks again after ``recheck_seconds`` (or the interval, if shorter).
Failed pings change nothing stored; they are counted by reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

import asyncpg

from mim import paths
from mim.entities import Address
from relay import LeaseLost, RelayError
from relay.db import addresses
from relay.first_party import Reporter
from relay.health import DATABASE_FAILURES
from relay.location import AddressRules
from relay.logging import get_logger
from relay.runner import sleep
from services.syncer import check, metrics
from services.syncer.check import SyncFailed
from services.syncer.claims import Alone, Claims
from services.syncer.client import Client, FetchError
from services.syncer.peers import Remote, stored_remote

__all__ = ["Ping", "Pinger", "ScanReport", "Scanner"]

_FALLBACK_STATUS: Final = frozenset({204, 404})  # older nodes (§11.3); static files

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Ping:
    """One ping: ``outcome`` is ``ok`` or why not; ``remote`` carries the type it declared."""

    remote: Remote
    outcome: str
    address: Address | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class Pinger:
    """Pings remotes and records those that answer, first-party."""

    def __init__(self, client: Client, reporter: Reporter, node_id: str) -> None:
        self._client = client
        self._reporter = reporter
        self._node_id = node_id

    async def ping(self, remote: Remote) -> Ping:
        """Ping ``remote``; never raises for what the remote does."""

        async def request(method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
            status, data = await self._client.request(remote, method, path, body=body, page="ping")
            if status in _FALLBACK_STATUS:
                return await self._client.request(remote, method, paths.NODE, page="node")
            return status, data

        try:
            page = await check.node_page(
                request, "GET", paths.PING_NODE, None, own_id=self._node_id
            )
        except (SyncFailed, FetchError) as exc:
            return self._done(Ping(remote, exc.reason))
        static = check.is_static(remote, page)
        try:
            address = await check.answered(
                self._reporter, remote, page.address, static=static, page_time=page.timestamp
            )
        except RelayError as exc:
            _log.warning("ping_not_recorded", peer=str(remote), error=repr(exc))
            return self._done(Ping(remote, "store"))
        answered = replace(remote, static=static, node_type=address.type)
        return self._done(Ping(answered, "ok", address))

    @staticmethod
    def _done(ping: Ping) -> Ping:
        metrics.PINGS.labels(ping.outcome).inc()
        return ping

    async def ping_all(self, remotes: list[Remote], page_size: int) -> list[Ping]:
        """Ping ``remotes``, ``page_size`` at once, in order."""
        pings: list[Ping] = []
        for at in range(0, len(remotes), page_size):
            page = remotes[at : at + page_size]
            pings.extend(await asyncio.gather(*(self.ping(r) for r in page)))
        return pings


@dataclass
class ScanReport:
    """What one network scan did."""

    addresses: int = 0  # read from the table
    skipped: int = 0  # pinged within the skip window
    undialable: int = 0  # no place we may dial (no host or port, or local)
    online: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def pinged(self) -> int:
        return self.online + sum(self.failed.values())

    def summary(self) -> dict[str, Any]:
        return {
            "addresses": self.addresses,
            "pinged": self.pinged,
            "online": self.online,
            "failed": dict(self.failed),
            "skipped": self.skipped,
            "undialable": self.undialable,
            "duration_s": round(self.seconds, 3),
        }


class Scanner:
    """The network scan: every stored address pinged, at most once per skip window."""

    def __init__(
        self,
        pinger: Pinger,
        pool: asyncpg.Pool,
        *,
        table_max: int = 1000,
        page_size: int = 100,
        skip_seconds: float = 120.0,
        interval_seconds: float = 600.0,
        rules: AddressRules | None = None,
        claims: Claims | None = None,
        recheck_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pinger = pinger
        self._claims: Claims = claims if claims is not None else Alone()
        self._recheck = min(recheck_seconds, interval_seconds)
        self._refused_at: float | None = None  # monotonic: another replica scans, or rests
        self._pool = pool
        self._table_max = table_max
        self._page_size = page_size
        self._skip = skip_seconds
        self.interval = interval_seconds
        self._rules = rules or AddressRules()
        self._clock = clock
        self._attempts: dict[tuple[str, str, int], float] = {}  # failed pings, monotonic time
        self._lock = asyncio.Lock()
        self.last_finished: float | None = None  # monotonic

    def stale(self) -> bool:
        """No scan yet, or the last one finished ``interval`` ago or longer (and no other replica
        was found scanning in the last ``recheck_seconds``)."""
        return self.due_in() == 0.0

    def due_in(self) -> float:
        """Seconds until the next scan is due (0: now)."""
        now = self._clock()
        due = 0.0
        if self.last_finished is not None:
            due = self.interval - (now - self.last_finished)
        if self._refused_at is not None:
            due = max(due, self._recheck - (now - self._refused_at))
        return max(0.0, due)

    async def scan_if_stale(self) -> ScanReport | None:
        """Scan if the last scan is stale and none is running now; the report, or None."""
        if self._lock.locked() or not self.stale():
            return None
        async with self._lock:
            if not self.stale():
                return None
            claim = await self._claims.schedule("scan")
            if claim is None:
                self._refused_at = self._clock()
                return None
            self._refused_at = None
            try:
                report = await claim.keep(self._scan())
            except LeaseLost:
                return None
            except BaseException:
                await claim.done(0.0)  # let another replica try at once
                raise
            await claim.done(self.interval)
            return report

    async def _due(self, report: ScanReport) -> list[Remote]:
        now, mono = int(time.time()), self._clock()
        self._attempts = {k: t for k, t in self._attempts.items() if mono - t < self._skip}
        stored = await addresses.recent(self._pool, limit=self._table_max)
        report.addresses = len(stored)
        due: list[Remote] = []
        for row in stored:
            _, remote = stored_remote(row, self._rules)
            if remote is None:
                report.undialable += 1
            elif now - row.last_ping < self._skip or remote.key in self._attempts:
                report.skipped += 1
            else:
                due.append(remote)
        return due

    async def _scan(self) -> ScanReport:
        started = self._clock()
        report = ScanReport()
        try:
            due = await self._due(report)
            for ping in await self._pinger.ping_all(due, self._page_size):
                if ping.ok:
                    report.online += 1
                else:
                    self._attempts[ping.remote.key] = self._clock()
                    report.failed[ping.outcome] = report.failed.get(ping.outcome, 0) + 1
        finally:
            self.last_finished = self._clock()
            report.seconds = self.last_finished - started
        metrics.SCAN_SECONDS.observe(report.seconds)
        metrics.LAST_SCAN.set(time.time())
        _log.info("network_scan_finished", **report.summary())
        return report

    async def run(self, stop: asyncio.Event) -> None:
        """Scan whenever one is due, until ``stop`` is set (a failed scan waits its interval)."""
        while not stop.is_set():
            try:
                await self.scan_if_stale()
            except DATABASE_FAILURES as exc:
                _log.warning("network_scan_failed", error=repr(exc))
            # 0: a scout's scan is running; look again shortly
            await sleep(stop, self.due_in() or 1.0)
