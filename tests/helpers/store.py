"""The store's schema in test databases."""

from __future__ import annotations

import asyncpg

from relay.db.schema import migrate


async def migrate_template(url: str) -> None:
    """Apply the store's migrations to the template database ``fresh_database`` is cloned from.

    A test module that needs the schema returns this from its ``database_template_setup``.
    """
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
