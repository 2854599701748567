"""The node key: an Ed25519 key made on the gateway's first start, kept in ``node_state``.

Writer: the gateway. Node ID = SHA-256 of the hex public key (PROTOCOL.md §0 fact 12). Two gateway
replicas starting together agree on one key: the insert is ``ON CONFLICT DO NOTHING`` and both
read back the winner. The syncer and the command line only read it, waiting a bounded time for a
gateway to make it on a node that never ran one.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Final

from mim.signing import SigningKey
from relay import DependencyUnavailable
from relay.db import Db

__all__ = ["NODE_KEY", "WRITER", "WRITES", "create", "load", "wait"]

#: The one service that writes ``node_state``.
WRITER: Final = "gateway"
#: The functions here that write; only the writer's code may call them.
WRITES: Final = ("create",)

#: ``node_state`` key of the node key's seed (hex).
NODE_KEY: Final = "node_key_seed"


async def load(db: Db) -> SigningKey | None:
    """The node's signing key, or None while no gateway has made one."""
    seed: str | None = await db.fetchval("SELECT value FROM node_state WHERE key = $1", NODE_KEY)
    return None if seed is None else SigningKey.from_seed_hex(seed)


async def create(db: Db) -> SigningKey:
    """The node's signing key, made and stored first if the node has none yet."""
    await db.execute(
        "INSERT INTO node_state (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        NODE_KEY,
        secrets.token_bytes(32).hex(),
    )
    key = await load(db)
    assert key is not None  # inserted above, or there already
    return key


async def wait(db: Db, *, attempts: int, delay: float) -> SigningKey:
    """The node's key once a gateway has made it; ``DependencyUnavailable`` after ``attempts``."""
    for attempt in range(attempts):
        key = await load(db)
        if key is not None:
            return key
        if attempt + 1 < attempts:
            await asyncio.sleep(delay)
    raise DependencyUnavailable("the node has no key yet: it is made when the gateway first starts")
