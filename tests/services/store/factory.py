"""Objects for store tests: real signed objects at low difficulty, made fast and reproducibly."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from mim import canonical, create
from mim import pow as mim_pow
from mim.entities import Provable
from mim.signing import SigningKey
from relay.bus import Layout, headers, msg_id, publish

DIFFICULTY = 4


class Factory:
    """Makes objects with one key, deterministic from ``seed``."""

    def __init__(self, seed: int = 1) -> None:
        self.key = SigningKey.generate(seed.to_bytes(32, "big"))
        self.minter = mim_pow.local_minter(random.Random(seed).randrange)

    def make(self, kind: str, values: dict[str, Any], now: int = 1_700_000_000) -> Provable:
        return create.create(kind, values, self.key, DIFFICULTY, now, self.minter)

    def board(self, name: str = "board one", now: int = 1_700_000_000, **extra: Any) -> Provable:
        return self.make("board", {"name": name, **extra}, now)

    def thread(
        self, board: Provable, name: str = "thread one", now: int = 1_700_000_000
    ) -> Provable:
        return self.make("thread", {"name": name, "board": board.fingerprint}, now)

    def post(
        self, board: Provable, thread: Provable, parent: Provable | None = None, body: str = "hi",
        now: int = 1_700_000_000,
    ) -> Provable:  # fmt: skip
        values = {
            "body": body,
            "board": board.fingerprint,
            "thread": thread.fingerprint,
            "parent": (parent or thread).fingerprint,
        }
        return self.make("post", values, now)

    def update(self, obj: Provable, changes: dict[str, Any], now: int) -> Provable:
        return create.update(obj, changes, self.key, DIFFICULTY, now, self.minter)

    def posts(self, count: int, now: int = 1_700_000_000) -> list[Provable]:
        """A board, a thread and ``count - 2`` posts in it: ``count`` distinct objects."""
        board = self.board(now=now)
        thread = self.thread(board, now=now)
        made = [board, thread]
        made += [self.post(board, thread, body=f"post {i}", now=now) for i in range(count - 2)]
        return made


def forged(obj: Provable, **changes: Any) -> Provable:
    """``obj`` with fields changed and no new proofs (the store does not verify; validators do)."""
    changed: Provable = dataclasses.replace(obj, **changes)
    return changed


async def publish_objects(js: Any, layout: Layout, objects: list[Provable]) -> None:
    """Publish ``objects`` to the accepted stream as the validator does."""
    for obj in objects:
        await publish(
            js,
            layout.accepted_subject(obj.kind),
            canonical.encode(obj),
            headers=headers(
                kind=obj.kind, message_id=msg_id(obj.kind, obj.fingerprint, obj.last_update)
            ),
        )
