"""The node key: an Ed25519 key made on first start and kept in the store's ``node_state``.

Node ID = SHA-256 of the hex public key (PROTOCOL.md §0 fact 12). Two gateways starting together
agree on one key: the insert is ``ON CONFLICT DO NOTHING`` and both read back the winner.
"""

from __future__ import annotations

import secrets
from typing import Any

from mim.signing import SigningKey

__all__ = ["STATE_KEY", "load_or_create"]

STATE_KEY = "node_key_seed"


async def load_or_create(db: Any) -> SigningKey:
    """The node's signing key, created and stored if the node has none yet."""
    await db.execute(
        "INSERT INTO node_state (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        STATE_KEY,
        secrets.token_bytes(32).hex(),
    )
    seed: str = await db.fetchval("SELECT value FROM node_state WHERE key = $1", STATE_KEY)
    return SigningKey.from_seed_hex(seed)
