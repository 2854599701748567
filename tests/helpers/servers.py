"""Real nats-server and PostgreSQL for the tests, and databases cloned from templates.

The session fixtures in ``tests/conftest.py`` use these; a test that kills or restarts a server
uses ``running_nats()`` / ``running_postgres()`` through the function-scoped ``dedicated_*``
fixtures, so the shared servers are never disturbed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from relay.embedded import NatsServer, PostgresServer

TemplateSetup = Callable[[str], Awaitable[None]]
"""Fills a template database, given its URL (the store adds its migrations this way)."""


def env_url(variable: str) -> str | None:
    """The URL in ``variable`` if set and not empty: the tests then use that external server."""
    return os.environ.get(variable) or None


def unique_name(prefix: str) -> str:
    """A fresh lower-case identifier, e.g. for a database."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    # Outside pytest's basetemp: PostgreSQL's system user must be able to reach it when we are
    # root, and a data directory is tens of megabytes not worth keeping after the run.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


#: Reservable JetStream file storage of test servers: 64 TiB of limits, megabytes of data.
TEST_MAX_FILE_STORE = 64 << 40


@contextmanager
def running_nats(**kwargs: Any) -> Iterator[NatsServer]:
    """A nats-server with JetStream on a free port, in a temporary directory removed after.

    Every test makes its own streams, and each stream reserves its byte limit (over 1 GiB with the
    defaults) against the server's file store at creation, so the test server allows far more
    reservation than the few megabytes the tests write; otherwise a long run runs out of it.
    """
    kwargs.setdefault("max_file_store", TEST_MAX_FILE_STORE)
    with temp_dir("mimrelay-nats-") as path:
        server = NatsServer(path / "nats", **kwargs).start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def running_postgres(**kwargs: Any) -> Iterator[PostgresServer]:
    """A PostgreSQL on a free port without fsync, in a temporary directory removed after."""
    kwargs.setdefault("fsync", False)
    with temp_dir("mimrelay-pg-") as path:
        server = PostgresServer(path / "pg", **kwargs).start()
        try:
            yield server
        finally:
            server.stop()


def with_database(url: str, database: str) -> str:
    """``url`` pointing at ``database`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


async def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """Create ``name`` (cloning ``template``) through ``admin_url``; returns the new URL."""
    conn = await asyncpg.connect(with_database(admin_url, "postgres"))
    try:
        sql = f'CREATE DATABASE "{name}"'
        if template is not None:
            sql += f' TEMPLATE "{template}"'
        await conn.execute(sql)
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(with_database(admin_url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class DatabaseTemplates:
    """One template database per template-setup function, built on first use, dropped at end.

    ``fresh_database`` clones the template of the setup that applies to the test, so a directory
    whose conftest overrides ``database_template_setup`` gets its own template.
    """

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._templates: dict[TemplateSetup | None, str] = {}

    async def template_for(self, setup: TemplateSetup | None) -> str:
        name = self._templates.get(setup)
        if name is None:
            name = unique_name("tmpl")
            url = await create_database(self.admin_url, name)
            try:
                if setup is not None:
                    await setup(url)
            except BaseException:
                await drop_database(self.admin_url, name)
                raise
            self._templates[setup] = name
        return name

    async def drop_all(self) -> None:
        for name in self._templates.values():
            await drop_database(self.admin_url, name)
        self._templates.clear()
