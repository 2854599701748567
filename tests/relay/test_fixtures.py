"""The shared test fixtures: real servers, a fresh database per test, unique stream prefixes."""

from __future__ import annotations

import asyncpg
import nats
import pytest

from relay.bus import Layout
from tests.helpers.servers import TemplateSetup, database_of

_seen_databases: set[str] = set()


async def test_fresh_database_is_empty_and_writable(fresh_database: str) -> None:
    """Each test gets its own database, cloned from the (here empty) template."""
    conn = await asyncpg.connect(fresh_database)
    try:
        tables = await conn.fetchval(
            "select count(*) from information_schema.tables where table_schema = 'public'"
        )
        assert tables == 0
        await conn.execute("create table mine (n int)")
    finally:
        await conn.close()
    _seen_databases.add(database_of(fresh_database))


async def test_fresh_database_is_another_one(fresh_database: str) -> None:
    """A second test does not see the first one's database or tables."""
    assert database_of(fresh_database) not in _seen_databases
    conn = await asyncpg.connect(fresh_database)
    try:
        assert await conn.fetchval("select to_regclass('mine')") is None
    finally:
        await conn.close()


async def _add_schema(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("create table migrated (version int); insert into migrated values (3)")
    finally:
        await conn.close()


class TestTemplateSetupOverride:
    """A conftest (here, a class) overriding database_template_setup gets its schema cloned."""

    @pytest.fixture
    def database_template_setup(self) -> TemplateSetup:
        return _add_schema

    async def test_clone_has_the_template_schema(self, fresh_database: str) -> None:
        """Tables created by the template setup are in every fresh database."""
        conn = await asyncpg.connect(fresh_database)
        try:
            assert await conn.fetchval("select version from migrated") == 3
        finally:
            await conn.close()


async def test_nats_url_has_jetstream(nats_url: str, stream_prefix: str) -> None:
    """The session NATS answers JetStream requests; the stream prefix is a fresh valid name."""
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().account_info()
        assert info.api.level is None or info.api.level >= 0
    finally:
        await nc.close()
    assert Layout(stream_prefix).ingest_stream != Layout().ingest_stream
