"""Leases in a bucket of shared state (:mod:`relay.kv`), each key with its own time to live.

One key is one lease: whoever holds it does the work it stands for (sync one remote, run one
schedule) and nobody else does meanwhile. Each entry says who holds it and whether at work or
resting (:class:`Holding`), and lives only for the time to live its writer gave it::

    take      create the key: refused while anyone's entry lives          -> work, ttl
    renew     rewrite it, compare-and-set on the revision we wrote last   -> work, ttl
    rest      the same, once the work is done: nobody takes it meanwhile  -> rest, its own time
    release   remove the revision we wrote, at once                       -> free

A holder renews well within the time to live (:func:`keep` does, every third of it). One that
dies stops renewing, its entry expires, and the next asker takes the lease. One whose rewrite is
refused, or that could not renew for a whole time to live, has lost it (it paused, or NATS was
away, and someone may have taken over): :func:`keep` then cancels the work and raises
``LeaseLost``. What such a stale holder did meanwhile must be harmless (the syncer's cursors never
move backwards).

The server drops an entry when its time to live ends, so a lease outlives no crash and needs no
clock agreement between replicas; ``Holding.until`` is only for people reading the bucket.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from typing import Final, Literal, TypeVar

from nats.js import JetStreamContext

from relay import BusError, BusUnavailable, LeaseLost
from relay.kv import Bucket, BucketSpec, ensure_bucket

__all__ = [
    "MIN_TTL_SECONDS",
    "Holding",
    "Lease",
    "LeaseBucket",
    "State",
    "holder_name",
    "keep",
]

_T = TypeVar("_T")

#: The server counts a time to live in whole seconds, at least one.
MIN_TTL_SECONDS: Final = 1.0

State = Literal["work", "rest"]


def holder_name() -> str:
    """A name for this process that no other process, here or on another machine, has."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Holding:
    """What one entry says: who holds the lease, at work or resting, until about when (Unix
    time, the writer's clock), and what it is for."""

    holder: str
    state: State
    until: float
    what: str = ""

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes | None) -> Holding | None:
        """The holding ``data`` records; None for anything else (a foreign or broken entry)."""
        try:
            raw = json.loads(data or b"")
            state = raw["state"] if raw["state"] in ("work", "rest") else None
            if state is None:
                return None
            return cls(str(raw["holder"]), state, float(raw["until"]), str(raw.get("what", "")))
        except (ValueError, KeyError, TypeError):
            return None


class LeaseBucket:
    """A bucket of leases; open it with :meth:`open`, then ask it for :meth:`lease` by key."""

    def __init__(self, state: Bucket) -> None:
        self.state = state
        self.name = state.name

    @classmethod
    async def open(
        cls, js: JetStreamContext, name: str, *, replicas: int = 1, description: str = ""
    ) -> LeaseBucket:
        """Create (or open) bucket ``name`` kept by ``replicas`` servers; safe to run concurrently.

        Raises ``BusError`` when the server cannot give each entry its own time to live (a
        nats-server before 2.11): leases there would never expire.
        """
        spec = BucketSpec(
            name,
            description or "Leases: who does what now, each expiring unless renewed.",
            replicas=replicas,
        )
        return cls(await ensure_bucket(js, spec))

    def lease(self, key: str, holder: str, *, ttl: float, what: str = "") -> Lease:
        """The lease ``key`` as ``holder`` asks for it, renewed within ``ttl`` seconds."""
        return Lease(self, key, holder, ttl=ttl, what=what)

    async def holdings(self) -> dict[str, Holding]:
        """Every lease held or resting now, by key (entries that are not holdings are left out)."""
        found: dict[str, Holding] = {}
        for key in await self.state.keys():
            holding, _ = await self._read(key)
            if holding is not None:
                found[key] = holding
        return found

    async def _create(self, key: str, holding: Holding, ttl: float) -> int:
        """Write ``holding`` if nobody holds ``key``: its revision, or 0."""
        return await self.state.claim(key, holding.encode(), ttl) or 0

    async def _swap(self, key: str, holding: Holding, ttl: float, last: int) -> int:
        """Write ``holding`` if ``last`` is still the key's revision; the new one, or 0."""
        return await self.state.swap(key, holding.encode(), last, ttl) or 0

    async def _read(self, key: str) -> tuple[Holding | None, int]:
        entry = await self.state.get(key)
        if entry is None:
            return None, 0
        return Holding.decode(entry.value), entry.revision

    async def _delete(self, last: int) -> None:
        try:
            await self.state.drop(last)
        except (BusUnavailable, BusError):
            return  # it expires by itself


class Lease:
    """One key of a :class:`LeaseBucket`, as one holder sees it."""

    def __init__(
        self, bucket: LeaseBucket, key: str, holder: str, *, ttl: float, what: str = ""
    ) -> None:
        self.bucket = bucket
        self.key = key
        self.holder = holder
        self.ttl = max(MIN_TTL_SECONDS, ttl)
        self.what = what
        self.revision = 0
        self.other: Holding | None = None  # who held it when we were last refused

    @property
    def held(self) -> bool:
        """Whether we hold it for work now (as far as our last write knows)."""
        return self.revision != 0

    def _holding(self, state: State, seconds: float) -> Holding:
        return Holding(self.holder, state, time.time() + seconds, self.what)

    async def take(self, *, over_rest: bool = False) -> bool:
        """Take the lease for work if nobody holds it (with ``over_rest``, also if its holder
        only rests); whether we hold it now. Raises ``BusUnavailable``."""
        if self.held:
            return await self.renew()
        holding = self._holding("work", self.ttl)
        revision = await self.bucket._create(self.key, holding, self.ttl)
        current: Holding | None = None
        if not revision:
            current, last = await self.bucket._read(self.key)
            if over_rest and current is not None and current.state == "rest":
                revision = await self.bucket._swap(self.key, holding, self.ttl, last)
            elif current is None and not last:  # expired or released meanwhile
                revision = await self.bucket._create(self.key, holding, self.ttl)
        self.revision = revision
        self.other = None if revision else current
        return self.held

    async def renew(self) -> bool:
        """Rewrite our entry with a fresh time to live; False if it is no longer ours (then we
        hold nothing). Raises ``BusUnavailable`` (the lease may then be lost)."""
        if not self.held:
            return False
        holding = self._holding("work", self.ttl)
        self.revision = await self.bucket._swap(self.key, holding, self.ttl, self.revision)
        return self.held

    async def rest(self, seconds: float) -> None:
        """The work is done: keep the key, marked resting, for ``seconds`` (nobody takes it
        meanwhile), or release it at once if that is under a second. Never raises: a lease that
        cannot be written expires by itself."""
        if not self.held:
            return
        if seconds < MIN_TTL_SECONDS:
            await self.release()
            return
        revision, self.revision = self.revision, 0
        try:
            await self.bucket._swap(self.key, self._holding("rest", seconds), seconds, revision)
        except (BusUnavailable, BusError):
            return

    async def release(self) -> None:
        """Give the lease up at once, if we hold it. Never raises."""
        revision, self.revision = self.revision, 0
        if revision:
            await self.bucket._delete(revision)


async def keep(lease: Lease, work: Awaitable[_T]) -> _T:
    """Run ``work`` while renewing ``lease`` (held) every third of its time to live.

    If the lease is taken over, or cannot be renewed for a whole time to live, the work is
    cancelled and ``LeaseLost`` raised; cancelling ``keep`` cancels the work.
    """
    task = asyncio.ensure_future(work)
    every = lease.ttl / 3
    renewed = time.monotonic()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            try:
                if not await lease.renew():
                    raise LeaseLost(f"lease {lease.key} was taken over")
                renewed = time.monotonic()
            except (BusUnavailable, BusError) as exc:
                if time.monotonic() - renewed >= lease.ttl:
                    lease.revision = 0
                    raise LeaseLost(f"lease {lease.key} not renewed for {lease.ttl:g} s") from exc
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
