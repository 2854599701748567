"""The store's side of the block list: it answers the operator's requests (``relay.blocks``).

``add`` and ``remove`` write the ``blocks`` table first and the validators' bucket second;
``sync`` rewrites the bucket from the table should they ever drift; ``list`` reads the table.
The store is the only writer of both. Requests come over NATS from ``mimrelay block`` and its
kin; a bad target is answered ``{"ok": false, "error": ...}``, never a crash.
"""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.kv import KeyValue

from relay import RelayError
from relay import blocks as shared
from relay import logging as relay_logging
from relay.db import Db
from relay.db import blocks as table

__all__ = ["Keeper", "add", "remove", "sync"]

_log = relay_logging.get_logger(__name__)


async def add(db: Db, kv: KeyValue, target: str, reason: str) -> bool:
    """Block ``target`` (the table, then the bucket); False if it was already blocked.

    Blocking again replaces the reason.
    """
    name = shared.normalise(target)
    created = await table.add(db, name, reason)
    await kv.put(shared.kv_key(name), shared.record(name, reason, time.time()))
    return created


async def remove(db: Db, kv: KeyValue, target: str) -> bool:
    """Unblock ``target``; False if it was not blocked (the bucket is cleared either way)."""
    name = shared.normalise(target)
    removed = await table.remove(db, name)
    await kv.delete(shared.kv_key(name))
    return removed


async def sync(db: Db, kv: KeyValue) -> tuple[int, int]:
    """Make the bucket hold exactly the table; returns (written, deleted)."""
    wanted = {shared.kv_key(b.fingerprint): b for b in await table.listing(db)}
    try:
        present = set(await kv.keys())
    except nats.js.errors.NoKeysError:
        present = set()
    for key, block in wanted.items():
        await kv.put(key, shared.record(block.fingerprint, block.reason, block.created_at))
    stale = present - set(wanted)
    for key in stale:
        await kv.delete(key)
    return len(wanted), len(stale)


class Keeper:
    """Answers block-list requests with the store's pool and the bucket."""

    def __init__(self, db: Db, kv: KeyValue) -> None:
        self._db = db
        self._kv = kv

    async def answer(self, msg: Msg) -> None:
        """Handle one request and reply to it."""
        try:
            request = json.loads(msg.data)
            if not isinstance(request, dict):
                raise ValueError("the request is not a JSON object")
            answer = await self._do(request)
        except (ValueError, RelayError) as exc:
            answer = {"ok": False, "error": str(exc)}
        except (OSError, nats.errors.Error, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _log.warning("block_request_failed", error=repr(exc))
            answer = {"ok": False, "error": f"the store could not do it now: {exc!r}"}
        await msg.respond(json.dumps(answer).encode())

    async def _do(self, request: dict[str, Any]) -> dict[str, Any]:
        op, target, reason = request.get("op"), request.get("target", ""), request.get("reason", "")
        if not isinstance(target, str) or not isinstance(reason, str):
            raise ValueError("`target` and `reason` must be strings")
        if op == "add":
            created = await add(self._db, self._kv, target, reason)
            _log.info("block_added", target=shared.normalise(target), new=created)
            return {"ok": True, "changed": created, "target": shared.normalise(target)}
        if op == "remove":
            removed = await remove(self._db, self._kv, target)
            _log.info("block_removed", target=shared.normalise(target), was_blocked=removed)
            return {"ok": True, "changed": removed, "target": shared.normalise(target)}
        if op == "sync":
            written, deleted = await sync(self._db, self._kv)
            return {"ok": True, "written": written, "deleted": deleted, **await self._listing()}
        if op == "list":
            return {"ok": True, **await self._listing()}
        raise ValueError(f"`op`: {op!r} is not one of add, remove, list, sync")

    async def _listing(self) -> dict[str, Any]:
        rows = await table.listing(self._db)
        return {
            "blocks": [
                {"fingerprint": b.fingerprint, "reason": b.reason, "created_at": b.created_at}
                for b in rows
            ]
        }
