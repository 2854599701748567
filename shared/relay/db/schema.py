"""Versioned schema migrations, applied at start-up by every store replica (and ``mimrelay up``).

Migrations are the numbered files in ``migrations/`` (``0001_initial.sql``, ``0002_...``), applied
in number order, each recorded in ``schema_migrations``. All pending files are applied in one
transaction under a transaction-level advisory lock, so replicas starting together queue on the
lock and every one but the first finds nothing to do; a failed file leaves the schema as it was.
A file, once released, is never edited: a change is a new file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncpg

from relay import logging as relay_logging
from relay.db import Conn

__all__ = [
    "LOCK_ID",
    "MIGRATIONS_DIR",
    "WRITER",
    "WRITES",
    "Migration",
    "applied",
    "migrate",
    "migrations",
]

#: The service that owns the schema (``mimrelay up`` applies the same files before starting it).
WRITER: Final = "store"
#: The functions here that write; only the writer's code may call them.
WRITES: Final = ("migrate",)

MIGRATIONS_DIR: Final = Path(__file__).with_name("migrations")

#: Key of the advisory lock held while migrating ("mimstore" in ASCII).
LOCK_ID: Final = 0x6D696D73746F7265

_NAME_RE: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

_log = relay_logging.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files of ``directory`` in version order; a misnamed file is an error."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME_RE.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name!r} is not named NNNN_lower_words.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migration files share a number in {directory}")
    return found


async def applied(conn: Conn) -> list[int]:
    """Versions recorded in ``schema_migrations`` (empty before the first migration)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return []
    rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    return [int(r["version"]) for r in rows]


async def migrate(target: asyncpg.Pool | Conn, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply every pending migration; return the versions this call applied.

    Safe to call from any number of processes at once.
    """
    pending_files = migrations(directory)
    if isinstance(target, asyncpg.Pool):
        async with target.acquire() as conn:
            return await _migrate(conn, pending_files)
    return await _migrate(target, pending_files)


async def _migrate(conn: Conn, files: list[Migration]) -> list[int]:
    done: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_ID)
        await conn.execute(_CREATE_TABLE)
        have = set(await applied(conn))
        for migration in files:
            if migration.version in have:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            done.append(migration.version)
    for version in done:
        _log.info("migration_applied", version=version)
    return done
