"""The data layer: the schema, its migrations and every query, typed, in one place.

Each table has exactly one writing service; every other process only reads it. The module that
holds a table's queries names its writer in ``WRITER``, and ``tests/relay/test_layers.py`` fails
when a write function is imported by any other service::

    table            writer     module                   read by
    objects          store      relay.db.storing (write) gateway, syncer, CLI (relay.db.objects)
    board_owners     store      relay.db.storing         (kept beside each stored board)
    addresses        store      relay.db.addresses       gateway, syncer, CLI
    blocks           store      relay.db.blocks          CLI (through the store), validator (bucket)
    node_state       gateway    relay.db.state           syncer, CLI (the node key)
    api_tokens       gateway    relay.db.tokens          gateway (every replica)
    syncer_state     syncer     relay.db.state           CLI
    sync_cursors     syncer     relay.db.cursors         CLI
    synced_caches    syncer     relay.db.cursors         -
    schema_migrations store     relay.db.schema          every service at start

First-party addresses (heard from a node itself) reach the store over the bus like every other
object (``Mim-Source: first-party``); retention (forgetting what fell out of the memory window) is
the store's too.

``Db`` is what a query runs on: a pool, a connection, or a connection borrowed from a pool.
"""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

__all__ = ["Conn", "Db"]

#: A connection, or one borrowed from a pool: what a transaction runs on.
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

#: A pool or a connection: anything with ``fetch``, ``fetchrow``, ``fetchval`` and ``execute``.
Db: TypeAlias = "asyncpg.Pool[asyncpg.Record] | Conn"
