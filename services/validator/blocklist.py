"""The operator's block list: what it holds, where it lives, how validators see it.

An entry names a fingerprint (of a key, board, thread, post, vote or truststate) or, for
addresses, a host; any object that is, is owned by, or sits under a blocked name is refused at
stage ``blocked`` (PROTOCOL.md §8.1 step 8; see ``checks.block_refs`` for exactly which fields
count). Unlike the reference, votes are blocked too: a vote on a blocked post or by a blocked key
has no use on this node.

The ``blocks`` table (written through ``services.store.repo``) is the record and the NATS
key-value bucket ``<PREFIX>_BLOCKLIST`` is its mirror that validators watch, so a change reaches
every replica within moments, without a restart and without validators needing the database.
``add`` and ``remove`` write the table first and the bucket second; ``sync`` rewrites the
bucket from the table (``mimrelay blocks --sync``) should they ever drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterable
from typing import Any, Final

import nats.errors
import nats.js.errors
import structlog
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from services.store import repo
from services.store.repo import Executor
from services.validator import metrics

__all__ = ["MAX_TARGET_LENGTH", "BlockList", "add", "kv_key", "normalise", "remove", "sync"]

#: A fingerprint is at most 64 bytes (PROTOCOL.md §1); a host name at most 253 characters.
MAX_TARGET_LENGTH: Final = 253
_PLAIN_KEY: Final = re.compile(r"^[a-z0-9_-]{1,64}$")

_log = structlog.stdlib.get_logger(__name__)


def normalise(target: str) -> str:
    """``target`` as stored: trimmed, lower case; ``ValueError`` naming the rule if unusable."""
    name = target.strip().lower()
    if not name:
        raise ValueError("`fingerprint`: must not be empty")
    if len(name) > MAX_TARGET_LENGTH:
        raise ValueError(f"`fingerprint`: {len(name)} characters is over {MAX_TARGET_LENGTH}")
    if any(ch.isspace() for ch in name):
        raise ValueError("`fingerprint`: must not contain white space")
    return name


def kv_key(target: str) -> str:
    """The bucket key of ``target``: itself when it is a plain token, else ``h.<hex of UTF-8>``."""
    return target if _PLAIN_KEY.match(target) else "h." + target.encode().hex()


# --------------------------------------------------------------------------- operator side


def _record(target: str, reason: str, created_at: float) -> bytes:
    return json.dumps({"target": target, "reason": reason, "created_at": created_at}).encode()


async def add(db: Executor, kv: KeyValue, target: str, reason: str) -> bool:
    """Block ``target`` (the table, then the bucket); False if it was already blocked.

    Blocking again replaces the reason.
    """
    name = normalise(target)
    created = await repo.add_block(db, name, reason)
    await kv.put(kv_key(name), _record(name, reason, time.time()))
    return created


async def remove(db: Executor, kv: KeyValue, target: str) -> bool:
    """Unblock ``target``; False if it was not blocked (the bucket is cleared either way)."""
    name = normalise(target)
    removed = await repo.remove_block(db, name)
    await kv.delete(kv_key(name))
    return removed


async def sync(db: Executor, kv: KeyValue) -> tuple[int, int]:
    """Make the bucket hold exactly the table; returns (written, deleted)."""
    wanted = {kv_key(b.fingerprint): b for b in await repo.list_blocks(db)}
    try:
        present = set(await kv.keys())
    except nats.js.errors.NoKeysError:
        present = set()
    for key, block in wanted.items():
        await kv.put(key, _record(block.fingerprint, block.reason, block.created_at))
    stale = present - set(wanted)
    for key in stale:
        await kv.delete(key)
    return len(wanted), len(stale)


# --------------------------------------------------------------------------- validator side


class BlockList:
    """A validator's live view of the bucket: a set of names, kept current by a watch.

    ``run`` watches the bucket; every ``refresh_seconds`` without a change it starts the watch
    again, which re-reads the whole bucket, so a missed update (a reconnect) heals itself.
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
                await _sleep_unless(stop, refresh_seconds)

    async def _follow(self, kv: KeyValue, stop: asyncio.Event, refresh_seconds: float) -> None:
        watcher = await kv.watchall()
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
        record = _decode(entry.value)
        if record is None:
            _log.warning("blocklist_entry_unreadable", key=entry.key)
            return
        names[record["target"]] = record.get("reason", "")


def _decode(value: bytes | None) -> dict[str, Any] | None:
    try:
        record = json.loads(value or b"")
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("target"), str):
        return None
    return record


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
