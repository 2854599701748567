"""Fixtures of the syncer tests: a migrated template and a factory of running nodes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Protocol

import pytest

from tests.helpers.servers import DatabaseTemplates, TemplateSetup
from tests.helpers.store import migrate_template
from tests.services.syncer.node import Node, start_node


class Nodes(Protocol):
    """Starts a node by name; ``host`` is where its gateway listens; ``syncer`` adds a syncer
    process that syncs only when asked (``mimrelay sync``)."""

    def __call__(self, name: str, host: str = ..., *, syncer: bool = ...) -> Awaitable[Node]: ...


@pytest.fixture
def database_template_setup() -> TemplateSetup | None:
    return migrate_template


@pytest.fixture
async def nodes(
    database_url: str,
    database_templates: DatabaseTemplates,
    nats_url: str,
    tmp_path: Path,
) -> AsyncIterator[Nodes]:
    """Starts nodes by name; every node started is stopped and dropped after the test."""
    template = await database_templates.template_for(migrate_template)
    async with AsyncExitStack() as stack:

        async def start(name: str, host: str = "127.0.0.1", *, syncer: bool = False) -> Node:
            data = tmp_path / name
            data.mkdir()
            return await stack.enter_async_context(
                start_node(name, database_url, template, nats_url, data, host, syncer=syncer)
            )

        yield start
