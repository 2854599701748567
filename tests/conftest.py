"""Session-wide test set-up: real servers, per-test isolation, strict hygiene.

Fixtures:

- ``nats_url`` (session): a real nats-server with JetStream (``MIM_NATS_URL`` if set, else one
  started in a temporary directory, ``nats_server``);
- ``database_url`` (session): a real PostgreSQL (``MIM_DATABASE_URL`` if set, else
  ``postgres_server``), pointing at a database the tests may use as admin;
- ``fresh_database``: the URL of a new database for this test, cloned from a template that
  ``database_template_setup`` filled (override that fixture in a conftest to add migrations);
- ``empty_database``: the URL of a new database with no schema at all;
- ``stream_prefix``: a stream prefix no other test uses (``relay.bus.Layout(stream_prefix)``);
- ``nc``: a NATS connection of this test alone;
- ``dedicated_nats_server`` / ``dedicated_postgres_server``: servers of this test alone, for tests
  that stop, kill or restart them.

Every test also fails if the event loop logged an unhandled error during it, and leaves logging
and bound context as it found them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import hypothesis
import nats
import pytest
from nats.aio.client import Client as NATS

from relay import logging as relay_logging
from relay.embedded import NatsServer, PostgresServer
from tests.helpers.servers import (
    DatabaseTemplates,
    TemplateSetup,
    create_database,
    drop_database,
    env_url,
    running_nats,
    running_postgres,
    unique_name,
)

hypothesis.settings.register_profile(
    "ci", derandomize=True, deadline=None, database=None, print_blob=True
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# --- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    if env_url("MIM_NATS_URL"):
        pytest.skip("MIM_NATS_URL is set: the tests use that server")
    with running_nats() as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(request: pytest.FixtureRequest) -> str:
    url = env_url("MIM_NATS_URL")
    if url is None:
        server: NatsServer = request.getfixturevalue("nats_server")
        url = server.url
    return url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if env_url("MIM_DATABASE_URL"):
        pytest.skip("MIM_DATABASE_URL is set: the tests use that server")
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> str:
    url = env_url("MIM_DATABASE_URL")
    if url is None:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.dsn
    return url


@pytest.fixture
def dedicated_nats_server() -> Iterator[NatsServer]:
    with running_nats() as server:
        yield server


@pytest.fixture
def dedicated_postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


# --- isolation -------------------------------------------------------------------------------


@pytest.fixture
def database_template_setup() -> TemplateSetup | None:
    """What fills the template ``fresh_database`` clones; override to add the schema."""
    return None


@pytest.fixture(scope="session")
def database_templates(database_url: str) -> Iterator[DatabaseTemplates]:
    templates = DatabaseTemplates(database_url)
    yield templates
    asyncio.run(templates.drop_all())


@pytest.fixture
async def fresh_database(
    database_url: str,
    database_templates: DatabaseTemplates,
    database_template_setup: TemplateSetup | None,
) -> AsyncIterator[str]:
    template = await database_templates.template_for(database_template_setup)
    name = unique_name("test")
    url = await create_database(database_url, name, template)
    yield url
    await drop_database(database_url, name)


@pytest.fixture
async def empty_database(database_url: str) -> AsyncIterator[str]:
    """URL of a new database with no schema at all."""
    name = unique_name("empty")
    url = await create_database(database_url, name)
    yield url
    await drop_database(database_url, name)


@pytest.fixture
def stream_prefix() -> str:
    return f"T{uuid.uuid4().hex[:12].upper()}"


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    """A NATS connection of this test alone."""
    client = await nats.connect(nats_url)
    yield client
    await client.close()


# --- hygiene ---------------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(self.format(record))


@pytest.fixture(autouse=True)
def _fail_on_loop_errors() -> Iterator[None]:
    """Fail a test during which asyncio logged an unhandled error (a lost task exception)."""
    handler = _Collect()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
        gc.collect()
    finally:
        logger.removeHandler(handler)
    if handler.messages:
        pytest.fail("the event loop logged errors:\n" + "\n".join(handler.messages))


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    relay_logging.reset()
