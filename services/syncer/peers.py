"""Remotes, the address rules the syncer applies, and the schedule (§13.1-13.3, §13.6).

A :class:`Remote` is where we dial: host, port, optional sublocation and scheme. ``parse_remote``
reads ``host:port``, ``[v6]:port`` and ``scheme://host:port``; ``parse_bootstrap`` a comma-separated
list of them (``MIM_BOOTSTRAP``).

The :class:`Scheduler` runs the neighbour loop: each tick first bootstraps when the bootstrap check
says it is due (§13.3), then takes the oldest neighbours that are not resting (up to
``max_concurrent_syncs``, each remote one sync at a time), syncs them in parallel, puts those that
succeeded back at the front, and scouts for each that failed (a network scan first if the last is
stale, then stored addresses, newest first, until one sync succeeds). Every
``bootstrap_explore_every_ticks`` ticks it also visits up to 3 live bootstrappers, 1 static
bootstrapper and the CA nodes, and otherwise every ``explore_every_ticks`` ticks up to 4 static
nodes (§13.2); when it has no neighbour it goes back to the bootstrap remotes. After every attempt
a remote rests for the exclusion window of its class (live 5 min, static 72 h).

Several syncer replicas share this work through :mod:`services.syncer.claims`: each sync holds its
remote's lease and leaves it resting for the exclusion window, node-wide; a remote another replica
holds is kept among the neighbours and tried again at the next tick; the bootstrap check and each
kind of explore visit run on one replica at a time, at their period.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from mim import canonical
from mim.entities import Address
from mim.nodes import LIVE_NODE_TYPES, STATIC_NODE_TYPES, NodeType
from relay import AddressRefused, LeaseLost
from relay.db.addresses import StoredAddress
from relay.location import AddressRules, check_place
from relay.logging import get_logger
from relay.runner import sleep
from services.syncer import metrics
from services.syncer.claims import Alone, Claim, Claims

__all__ = [
    "Bootstrapping",
    "Exclusions",
    "Outcome",
    "Remote",
    "Scheduler",
    "location_type",
    "parse_bootstrap",
    "parse_remote",
    "remote_of",
    "stored_remote",
]

_SCHEMES: Final = ("http", "https")

_log = get_logger(__name__)


def location_type(host: str) -> int:
    """4 for an IPv4 address, 6 for IPv6, 3 for a host name (§10.3)."""
    try:
        return 6 if ipaddress.ip_address(host).version == 6 else 4
    except ValueError:
        return 3


@dataclass(frozen=True, slots=True)
class Remote:
    """Where a remote node is dialled."""

    host: str  # IPv6 without brackets
    port: int
    sublocation: str = ""
    scheme: str = ""  # "" lets the client choose (settings `scheme`)
    static: bool = False  # known static before we ask (types 253-255)
    node_type: int = 0  # as stored (0: not known, e.g. learned from a third party)

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"{host}:{self.port}"
        return f"{base}/{self.sublocation.strip('/')}" if self.sublocation else base

    @property
    def location_type(self) -> int:
        return location_type(self.host)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.host.lower(), self.sublocation, self.port)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}" if self.scheme else self.netloc


def parse_remote(text: str) -> Remote:
    """A remote from ``host:port``, ``[v6]:port`` or ``scheme://host:port[/sublocation]``."""
    raw = text.strip()
    scheme = ""
    if "://" in raw:
        scheme, _, raw = raw.partition("://")
        scheme = scheme.lower()
        if scheme not in _SCHEMES:
            raise ValueError(f"{text!r}: scheme must be http or https")
    raw, _, sublocation = raw.partition("/")
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r}: an IPv6 remote is written [address]:port")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError as exc:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from exc
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep or not host or ":" in host:
            raise ValueError(f"{text!r}: expected host:port or [v6]:port")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: port must be 1..65535")
    return Remote(host=host, port=int(port_text), sublocation=sublocation, scheme=scheme)


def parse_bootstrap(text: str) -> list[Remote]:
    """The remotes of a comma-separated list; empty items are skipped."""
    return [parse_remote(item) for item in text.split(",") if item.strip()]


def remote_of(address: Address, rules: AddressRules) -> Remote | None:
    """Where to dial the node of ``address``, or None if it names no place we may dial
    (:func:`relay.location.check_place` under ``rules``)."""
    try:
        place = check_place(address.location, address.port, rules, sublocation=address.sublocation)
    except AddressRefused:
        return None
    return Remote(
        host=place.location,
        port=place.port,
        sublocation=place.sublocation,
        static=address.type in STATIC_NODE_TYPES,
        node_type=address.type,
    )


def stored_remote(row: StoredAddress, rules: AddressRules) -> tuple[Address, Remote | None]:
    """The address a stored row holds, and where to dial its node (None: nowhere we may)."""
    address = canonical.loads(Address, row.body)
    return address, remote_of(address, rules)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the scheduler needs to know of one sync attempt."""

    ok: bool
    node_type: int = 0


class Exclusions:
    """Remotes resting after a sync attempt, until a monotonic deadline (§13.2)."""

    def __init__(self, live_seconds: float, static_seconds: float) -> None:
        self._live = live_seconds
        self._static = static_seconds
        self._until: dict[tuple[str, str, int], float] = {}

    def excluded(self, remote: Remote, now: float) -> bool:
        until = self._until.get(remote.key)
        if until is None:
            return False
        if until <= now:
            del self._until[remote.key]
            return False
        return True

    def exclude(self, remote: Remote, node_type: int, now: float) -> float:
        """Rest ``remote``: live types briefly, static and unknown types long; for how long."""
        live = node_type in LIVE_NODE_TYPES
        rest = self._live if live else self._static
        self._until[remote.key] = now + rest
        metrics.EXCLUSIONS.labels("live" if live else "static").inc()
        return rest

    def __len__(self) -> int:
        return len(self._until)


Sync = Callable[[Remote], Awaitable[Outcome]]
Known = Callable[[], Awaitable[list[Remote]]]
Scan = Callable[[], Awaitable[object]]


class Bootstrapping(Protocol):
    """What the scheduler asks of the bootstrap check (``services.syncer.bootstrap.Bootstrap``)."""

    async def due(self) -> bool:
        """Whether the last successful bootstrap is old enough to bootstrap again."""
        ...

    async def discover(self) -> list[Remote]:
        """The bootstrappers that answer a ping now."""
        ...

    async def done(self, synced: int) -> float:
        """Record a bootstrap round in which ``synced`` bootstrappers synced; how long no round
        may run (anywhere) before the check is asked again."""
        ...


class Scheduler:
    """The neighbour loop; ``sync`` does one sync, ``known`` lists stored addresses newest first.

    ``scan`` (a network scan when the last one is stale) runs before each scout; ``bootstrapper``
    is asked at every tick whether to bootstrap (§13.3); ``ca_nodes`` are visited with the
    bootstrappers every ``bootstrap_every`` ticks. ``claims`` shares the work with other replicas
    (by default it is this one's alone).
    """

    def __init__(
        self,
        sync: Sync,
        known: Known,
        *,
        bootstrap: Iterable[Remote] = (),
        neighbour_count: int = 10,
        max_concurrent: int = 4,
        scout_attempts: int = 50,
        explore_every: int = 6,
        bootstrap_every: int = 36,
        ca_nodes: Iterable[Remote] = (),
        scan: Scan | None = None,
        bootstrapper: Bootstrapping | None = None,
        exclusions: Exclusions | None = None,
        claims: Claims | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sync = sync
        self._claims: Claims = claims if claims is not None else Alone()
        self.tick_seconds = 60.0  # set by run
        self._known = known
        self.bootstrap = list(bootstrap)
        self.ca_nodes = list(ca_nodes)
        self.neighbours: collections.deque[Remote] = collections.deque(maxlen=neighbour_count)
        # not `exclusions or ...`: an Exclusions with nobody resting is empty, hence falsy
        self.exclusions = exclusions if exclusions is not None else Exclusions(300.0, 72 * 3600.0)
        self._slots = asyncio.Semaphore(max_concurrent)
        self._max_concurrent = max_concurrent
        self._scout_attempts = scout_attempts
        self._explore_every = explore_every
        self._bootstrap_every = bootstrap_every
        self._scan = scan
        self._bootstrapper = bootstrapper
        self._clock = clock
        self._busy: set[tuple[str, str, int]] = set()
        self.ticks = 0

    def _free(self, remote: Remote) -> bool:
        return remote.key not in self._busy and not self.exclusions.excluded(remote, self._clock())

    def _push_front(self, remote: Remote) -> None:
        for old in [r for r in self.neighbours if r.key == remote.key]:
            self.neighbours.remove(old)
        self.neighbours.append(remote)  # the right end is the newest; ticks pop from the left

    async def attempt(self, remote: Remote) -> Outcome | None:
        """Sync ``remote`` unless it is being synced already, here or by another replica, or
        rests node-wide (then None); then let it rest."""
        if remote.key in self._busy:
            return None
        self._busy.add(remote.key)
        try:
            async with self._slots:
                claim = await self._claims.remote(remote.key, str(remote))
                if claim is None:
                    return None
                outcome = await self._attempt(remote, claim)
        finally:
            self._busy.discard(remote.key)
        if outcome is not None:
            rest = self.exclusions.exclude(remote, outcome.node_type, self._clock())
            await claim.done(rest)
        return outcome

    async def _attempt(self, remote: Remote, claim: Claim) -> Outcome | None:
        try:
            return await claim.keep(self._sync(remote))
        except LeaseLost:
            return None  # another replica has it now
        except asyncio.CancelledError:
            await claim.done(0.0)  # stopping: hand it over at once
            raise

    def _picks(self) -> list[Remote]:
        picks: list[Remote] = []
        for remote in list(self.neighbours):
            if len(picks) >= self._max_concurrent:
                break
            if self._free(remote):
                self.neighbours.remove(remote)
                picks.append(remote)
        if not picks and not self.neighbours:
            picks.extend(r for r in self.bootstrap if self._free(r))
        return picks[: self._max_concurrent]

    async def explore(self) -> list[Remote]:
        """This tick's visits beyond the neighbours (§13.2).

        Every ``bootstrap_every`` ticks: up to 3 live bootstrappers (type 3), 1 static
        bootstrapper (254) and every CA node; otherwise every ``explore_every`` ticks: up to 4
        static nodes (255). Remotes resting or being synced are passed over. Each kind of visit
        runs on one replica at a time, at most once per its period.
        """
        if self.ticks % self._bootstrap_every == 0:
            if not await self._schedule("explore-bootstrappers", self._bootstrap_every):
                return []
            known = [r for r in await self._known() if self._free(r)]
            chosen = [r for r in known if r.node_type == NodeType.LIVE_BOOTSTRAP][:3]
            chosen += [r for r in known if r.node_type == NodeType.STATIC_BOOTSTRAP][:1]
            chosen += [r for r in self.ca_nodes if self._free(r)]
        elif self.ticks % self._explore_every == 0:
            if not await self._schedule("explore-statics", self._explore_every):
                return []
            known = [r for r in await self._known() if self._free(r)]
            chosen = [r for r in known if r.node_type == NodeType.STATIC][:4]
        else:
            return []
        unique = list({r.key: r for r in chosen}.values())
        if unique:
            _log.info("explore", tick=self.ticks, remotes=[str(r) for r in unique])
        return unique

    async def _schedule(self, name: str, every_ticks: int) -> bool:
        """Whether this replica runs schedule ``name`` now; if so, no replica does for the next
        ``every_ticks`` ticks (less half a tick, as replicas' ticks drift)."""
        claim = await self._claims.schedule(name)
        if claim is None:
            return False
        await claim.done((every_ticks - 0.5) * self.tick_seconds)
        return True

    async def bootstrap_check(self) -> int:
        """When the last bootstrap is old, sync every online bootstrapper (§13.3); successes.

        With more than one, those that synced are synced once more, so what each took from the
        others while we were at it reaches us in the same round (the reference does the same).
        One replica at a time runs a round.
        """
        if self._bootstrapper is None or not await self._bootstrapper.due():
            return 0
        claim = await self._claims.schedule("bootstrap")
        if claim is None:
            return 0
        try:
            synced = await claim.keep(self._bootstrap_round(self._bootstrapper))
        except LeaseLost:
            return 0
        await claim.done(await self._bootstrapper.done(synced))
        return synced

    async def _bootstrap_round(self, bootstrapper: Bootstrapping) -> int:
        online = await bootstrapper.discover()
        outcomes = await asyncio.gather(*(self.attempt(r) for r in online))
        ok = [r for r, o in zip(online, outcomes, strict=True) if o is not None and o.ok]
        if len(online) > 1 and ok:
            await asyncio.gather(*(self.attempt(r) for r in ok))
        return len(ok)

    async def tick(self) -> int:
        """One round: bootstrap if due, sync the picked neighbours and this tick's explore
        visits in parallel, scout for each neighbour that failed; successes."""
        self.ticks += 1
        succeeded = await self.bootstrap_check()
        picks = self._picks()
        taken = {p.key for p in picks}
        visits = [r for r in await self.explore() if r.key not in taken]
        outcomes = await asyncio.gather(*(self.attempt(r) for r in (*picks, *visits)))
        for n, (remote, outcome) in enumerate(zip((*picks, *visits), outcomes, strict=True)):
            if outcome is not None and outcome.ok:
                succeeded += 1
                if n < len(picks) and not remote.static:
                    self._push_front(remote)
            elif outcome is not None and n < len(picks):
                succeeded += await self.scout()
            elif n < len(picks):
                self._keep_oldest(remote)  # another replica has it: ask again next tick
        return succeeded

    def _keep_oldest(self, remote: Remote) -> None:
        held = {r.key for r in self.neighbours}
        if remote.key not in held and len(self.neighbours) < (self.neighbours.maxlen or 0):
            self.neighbours.appendleft(remote)

    async def scout(self) -> int:
        """Scan first if the last scan is stale, then try stored addresses, newest first, until
        one sync succeeds; 1 if one did."""
        if self._scan is not None:
            await self._scan()
        tried = 0
        held = {r.key for r in self.neighbours}
        for remote in await self._known():
            if tried >= self._scout_attempts:
                break
            if remote.static or remote.key in held or not self._free(remote):
                continue
            tried += 1
            outcome = await self.attempt(remote)
            if outcome is not None and outcome.ok:
                self._push_front(remote)
                return 1
        _log.info("scout_found_nothing", tried=tried)
        return 0

    async def run(self, stop: asyncio.Event, tick_seconds: float) -> None:
        """Tick until ``stop`` is set."""
        self.tick_seconds = tick_seconds
        while not stop.is_set():
            started = self._clock()
            await self.tick()
            await sleep(stop, max(0.0, tick_seconds - (self._clock() - started)))
