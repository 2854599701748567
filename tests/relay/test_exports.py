"""Each runtime module's ``__all__`` is exactly its public surface."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

MODULES = [
    "relay",
    "relay.settings",
    "relay.logging",
    "relay.metrics",
    "relay.runner",
    "relay.connect",
    "relay.cpu",
    "relay.first_party",
    "relay.blocks",
    "relay.sync_request",
    "relay.wrapped",
    "relay.db",
    "relay.db.objects",
    "relay.db.storing",
    "relay.db.addresses",
    "relay.db.blocks",
    "relay.db.cursors",
    "relay.db.identity",
    "relay.db.retention",
    "relay.db.schema",
    "relay.db.caches",
    "relay.caches",
    "relay.caches.build",
    "relay.caches.files",
    "relay.caches.plan",
    "relay.health",
    "relay.embedded",
    "relay.embedded.process",
    "relay.embedded.nats_server",
    "relay.embedded.postgres",
    "relay.bus",
    "relay.leases",
    "relay.node_servers",
    "relay.node_services",
    "relay.node_state",
    "relay.restarts",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_the_public_names(name: str) -> None:
    """Names defined in the module without a leading underscore are exactly those in __all__."""
    module = importlib.import_module(name)
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not inspect.ismodule(value)
        and getattr(value, "__module__", name) == name
        and (callable(value) or attr.isupper())
    }
    assert public <= set(module.__all__), f"not exported: {sorted(public - set(module.__all__))}"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing


def test_relay_import_is_light() -> None:
    """Importing the package loads none of the heavy runtime modules (the CLI stays fast)."""
    heavy = ("nats", "asyncpg", "structlog", "pydantic", "prometheus_client")
    code = f"import sys, relay; print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
