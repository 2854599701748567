"""Shared request state on JetStream key-value buckets: bounded, with a time to live per key.

What every replica of a service must agree on between two requests (a nonce spent, a remote's
lease, a request in flight, a rate window) is kept in a :class:`Bucket`: a JetStream KV bucket made
by :func:`ensure_bucket` with

- a bound on entries (``max_entries``) and bytes, past which a new key is refused
  (:class:`relay.StateFull`, discard new) while keys already held can still be rewritten;
- a time to live per key (``Nats-TTL``, nats-server 2.11 or later), so state the writer forgot
  (a crashed replica's leases) leaves by itself, and an optional age for the whole bucket.

Writes are conditional where it matters: :meth:`Bucket.claim` creates a key only if it is absent,
:meth:`Bucket.swap` replaces it only at the revision read, so two replicas racing for the last slot
or the same nonce cannot both win. :meth:`Bucket.drop` removes one revision outright (no delete
marker left to count). :func:`spend` counts uses of a key in a fixed window on top of these, and
:mod:`relay.leases` takes turns at work with them.

Failures of NATS become :class:`relay.BusUnavailable`; nothing here retries for long. A bucket
held in the server's memory is gone when the server restarts: the first operation that finds its
stream missing makes it again (empty, as memory state is) and is tried once more.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from relay import BusError, BusUnavailable, StateFull
from relay.bus import NATS_UNAVAILABLE
from relay.logging import get_logger

__all__ = ["Bucket", "BucketSpec", "Entry", "ensure_bucket", "spend"]

_ERR_WRONG_LAST: Final = (10071, 10164)  # expected last subject sequence did not match
_ERR_FULL: Final = (10077, 10047)  # maximum messages or bytes exceeded; storage exhausted
_ERR_NAME_IN_USE: Final = 10058
_HEADER_EXPECTED_LAST: Final = "Nats-Expected-Last-Subject-Sequence"
_SPEND_ATTEMPTS: Final = 64  # racing writers of one counter: each loss means another won
_SPEND_JITTER_SECONDS: Final = 0.002  # after a loss, so the racers spread out
_FAILURES: Final = (*NATS_UNAVAILABLE, nats.js.errors.NoStreamResponseError)
# what an operation on a stream the server no longer has raises
_GONE: Final = (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError)

T = TypeVar("T")

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """The shape of one bucket; every writer of it must pass the same."""

    name: str
    description: str
    max_entries: int = -1
    max_bytes: int = -1
    max_age_seconds: float | None = None  # of every key, whatever its own time to live
    memory: bool = False  # held in the server's memory: fast, gone if the server restarts
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One key's current value and the revision that wrote it."""

    value: bytes
    revision: int


def _stream(spec: BucketSpec) -> StreamConfig:
    return StreamConfig(
        name=f"KV_{spec.name}",
        description=spec.description,
        subjects=[f"$KV.{spec.name}.>"],
        max_msgs=spec.max_entries,
        max_bytes=spec.max_bytes,
        max_age=spec.max_age_seconds,
        max_msgs_per_subject=1,
        discard=DiscardPolicy.NEW,
        storage=StorageType.MEMORY if spec.memory else StorageType.FILE,
        num_replicas=spec.replicas,
        allow_rollup_hdrs=True,
        allow_direct=True,
        allow_msg_ttl=True,
        deny_delete=False,
        duplicate_window=1.0,
    )


async def ensure_bucket(js: JetStreamContext, spec: BucketSpec) -> Bucket:
    """Create ``spec``'s bucket, or bring an existing one to ``spec``; safe to run concurrently."""
    await _create(js, spec)
    return Bucket(js, spec)


async def _create(js: JetStreamContext, spec: BucketSpec) -> None:
    config = _stream(spec)
    try:
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _ERR_NAME_IN_USE:
                raise BusError(f"cannot create bucket {spec.name}: {exc}", exc.err_code) from exc
            await js.update_stream(config)
    except nats.js.errors.APIError as exc:
        raise BusError(f"bucket {spec.name} cannot take its configuration: {exc}") from exc
    except _FAILURES as exc:
        raise BusUnavailable(f"bucket {spec.name}: {exc!r}") from exc


def _ttl(seconds: float | None) -> float | None:
    # the server counts whole seconds, and 0 would mean "never"
    return None if seconds is None else float(max(1, math.ceil(seconds)))


class Bucket:
    """One bucket of shared state; keys are ``[A-Za-z0-9_=/.-]`` tokens."""

    def __init__(self, js: JetStreamContext, spec: BucketSpec) -> None:
        self._js = js
        self._spec = spec
        self.name = spec.name
        self.stream = f"KV_{spec.name}"
        self._prefix = f"$KV.{spec.name}."

    async def _on_stream(self, op: Callable[[], Awaitable[T]]) -> T:
        """``op``, made again on a new stream if the server lost ours."""
        try:
            return await op()
        except _GONE as exc:
            _log.warning("bucket_recreated", bucket=self.name, error=repr(exc))
            await _create(self._js, self._spec)
        return await op()

    async def _publish(
        self, key: str, value: bytes, ttl: float | None, last: int | None
    ) -> int | None:
        """Write ``key``; its revision, or None when ``last`` was not the key's revision."""
        headers = None if last is None else {_HEADER_EXPECTED_LAST: str(last)}
        try:
            ack = await self._on_stream(
                lambda: self._js.publish(
                    self._prefix + key, value, headers=headers, msg_ttl=_ttl(ttl)
                )
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in _ERR_WRONG_LAST:
                return None
            if exc.err_code in _ERR_FULL:
                raise StateFull(f"{self.name} is full: {exc.description}") from exc
            raise BusError(
                f"{self.name}: {exc.description} ({exc.err_code})", exc.err_code
            ) from exc
        except _FAILURES as exc:
            raise BusUnavailable(f"{self.name}: {exc!r}") from exc
        return int(ack.seq)

    async def claim(self, key: str, value: bytes = b"", ttl: float | None = None) -> int | None:
        """Create ``key`` if nobody holds it: its revision, or None if it is held."""
        return await self._publish(key, value, ttl, 0)

    async def put(self, key: str, value: bytes = b"", ttl: float | None = None) -> int:
        """Write ``key`` whatever it holds; its revision."""
        revision = await self._publish(key, value, ttl, None)
        assert revision is not None  # unconditional writes never conflict
        return revision

    async def swap(self, key: str, value: bytes, last: int, ttl: float | None = None) -> int | None:
        """Replace ``key`` if it is still at revision ``last``: the new revision, or None."""
        return await self._publish(key, value, ttl, last)

    async def get(self, key: str) -> Entry | None:
        """The key's value and revision, or None if it is absent (or expired)."""
        try:
            msg = await self._on_stream(
                lambda: self._js.get_last_msg(self.stream, self._prefix + key, direct=True)
            )
        except nats.js.errors.NotFoundError:
            return None
        except _FAILURES as exc:
            raise BusUnavailable(f"{self.name}: {exc!r}") from exc
        return Entry(msg.data or b"", int(msg.seq or 0))

    async def keys(self) -> list[str]:
        """Every key held now (for people and tests: a bucket of many keys answers slowly)."""
        try:
            info = await self._on_stream(
                lambda: self._js.stream_info(self.stream, subjects_filter=self._prefix + ">")
            )
        except _FAILURES as exc:
            raise BusUnavailable(f"{self.name}: {exc!r}") from exc
        return sorted(subject.removeprefix(self._prefix) for subject in info.state.subjects or {})

    async def drop(self, revision: int) -> None:
        """Remove the value written at ``revision`` (gone already is fine)."""
        try:
            await self._js.delete_msg(self.stream, revision)
        except nats.js.errors.NotFoundError:
            return
        except nats.js.errors.APIError as exc:
            raise BusError(f"{self.name}: {exc.description}", exc.err_code) from exc
        except _FAILURES as exc:
            raise BusUnavailable(f"{self.name}: {exc!r}") from exc


def _window(entry: Entry | None, now: int, seconds: int) -> tuple[int, int]:
    """(start, uses) of the window ``entry`` holds, or of a new one from ``now``."""
    if entry is not None:
        start, _, uses = entry.value.decode("ascii", "replace").partition(" ")
        if start.isdigit() and uses.isdigit() and now < int(start) + seconds:
            return int(start), int(uses)
    return now, 0


async def spend(
    bucket: Bucket, key: str, *, limit: int, seconds: int, now: int, amount: int = 1
) -> bool:
    """Count ``amount`` uses of ``key`` in its window of ``seconds``: False (and nothing counted)
    if they would pass ``limit``.

    The window starts at the first use and the key expires with it; a writer that lost a race
    to another reads again and retries (each loss means another writer counted), and is refused
    only after many losses in a row.
    """
    for _ in range(_SPEND_ATTEMPTS):
        entry = await bucket.get(key)
        start, uses = _window(entry, now, seconds)
        if uses + amount > limit:
            return False
        value = f"{start} {uses + amount}".encode()
        ttl = start + seconds - now
        if entry is None:
            won = await bucket.claim(key, value, ttl)
        else:
            won = await bucket.swap(key, value, entry.revision, ttl)
        if won is not None:
            return True
        await asyncio.sleep(random.uniform(0, _SPEND_JITTER_SECONDS))
    return False
