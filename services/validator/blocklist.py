"""A validator's live view of the operator's block list.

An entry names a fingerprint (of a key, board, thread, post, vote or truststate) or, for
addresses, a host; any object that is, is owned by, or sits under a blocked name is refused at
stage ``blocked`` (PROTOCOL.md §8.1 step 8; see ``checks.block_refs`` for exactly which fields
count). Unlike the reference, votes are blocked too: a vote on a blocked post or by a blocked key
has no use on this node.

The store keeps the list and mirrors it into the NATS key-value bucket ``<PREFIX>_BLOCKLIST``
(:mod:`relay.blocks`); validators only watch that bucket, so a change reaches every replica within
moments, without a restart and without validators needing the database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import nats.errors
import structlog
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from relay.blocks import decode_record, kv_key
from relay.runner import sleep
from services.validator import metrics

__all__ = ["BlockList"]

_log = structlog.stdlib.get_logger(__name__)

_MIN_LINGER_SECONDS = 1.0  # the shortest time a let-go watch's consumer stays on the server


class BlockList:
    """A validator's live view of the bucket: a set of names, kept current by a watch.

    ``run`` watches the bucket; every ``refresh_seconds`` without a change it starts the watch
    again, which re-reads the whole bucket, so a missed update (a reconnect) heals itself. Each
    watch is a consumer on the server, which removes it ``refresh_seconds`` after its watcher let
    go (the client library's default would keep each for 5 minutes: 60 idle consumers per
    validator at the default period).
    """

    def __init__(self) -> None:
        self._names: dict[str, str] = {}  # target -> reason
        self.loaded = asyncio.Event()

    def __len__(self) -> int:
        return len(self._names)

    def match(self, refs: Iterable[str]) -> str | None:
        """The first of ``refs`` that is blocked, or None."""
        names = self._names
        if not names:
            return None
        for ref in refs:
            if ref in names:
                return ref
        return None

    def reason(self, target: str) -> str:
        return self._names.get(target, "")

    async def run(self, kv: KeyValue, stop: asyncio.Event, refresh_seconds: float) -> None:
        """Follow the bucket until ``stop`` is set."""
        follower = asyncio.ensure_future(self._follow_forever(kv, stop, refresh_seconds))
        try:
            await stop.wait()
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    async def _follow_forever(
        self, kv: KeyValue, stop: asyncio.Event, refresh_seconds: float
    ) -> None:
        while not stop.is_set():
            try:
                await self._follow(kv, stop, refresh_seconds)
            except (nats.errors.Error, OSError) as exc:
                _log.warning("blocklist_watch_failed", error=repr(exc))
                await sleep(stop, refresh_seconds)

    async def _follow(self, kv: KeyValue, stop: asyncio.Event, refresh_seconds: float) -> None:
        watcher = await kv.watchall(inactive_threshold=max(refresh_seconds, _MIN_LINGER_SECONDS))
        snapshot: dict[str, str] | None = {}
        try:
            while not stop.is_set():
                try:
                    entry = await watcher.updates(timeout=refresh_seconds)  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    if snapshot is None:
                        return  # quiet for a while: start over, re-reading the whole bucket
                    continue
                if entry is None:  # the bucket's current content has been delivered
                    if snapshot is not None:
                        self._replace(snapshot)
                        snapshot = None
                    continue
                self._apply(snapshot if snapshot is not None else self._names, entry)
                if snapshot is None:
                    metrics.BLOCKLIST_ENTRIES.set(len(self._names))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    def _replace(self, names: dict[str, str]) -> None:
        changed = names != self._names
        self._names = names
        metrics.BLOCKLIST_ENTRIES.set(len(names))
        if changed or not self.loaded.is_set():
            _log.info("blocklist_loaded", entries=len(names))
        self.loaded.set()

    @staticmethod
    def _apply(names: dict[str, str], entry: KeyValue.Entry) -> None:
        if entry.operation in (KV_DEL, KV_PURGE):
            for target in [t for t in names if kv_key(t) == entry.key]:
                del names[target]
            return
        record = decode_record(entry.value)
        if record is None:
            _log.warning("blocklist_entry_unreadable", key=entry.key)
            return
        names[record["target"]] = record.get("reason", "")
