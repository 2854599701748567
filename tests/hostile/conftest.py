"""The hostile-client suite: each test attacks a real gateway process (real NATS, PostgreSQL and
uvicorn) as a stranger would, while a well-behaved remote keeps asking for the node page, and
states the bounds it holds the gateway to: its answers to the attacker, its resident memory, the
well-behaved client's every answer and worst latency, and its health afterwards."""

from __future__ import annotations

import pytest

from tests.helpers.servers import TemplateSetup
from tests.helpers.store import migrate_template


@pytest.fixture
def database_template_setup() -> TemplateSetup | None:
    return migrate_template
