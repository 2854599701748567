"""The gateway's settings and docs/security.md agree: every bound a stranger meets is there."""

from __future__ import annotations

import re

from services.gateway.settings import GatewaySettings

from relay.node import NodeSupervisorSettings
from relay.settings import env_name
from tests.helpers.procs import REPO

SECURITY = REPO / "docs" / "security.md"
#: Gateway settings that bound no stranger: building caches, the pool, metrics, shutdown,
#: compression, replicas sharing a port.
NOT_EDGE = {
    "MIM_GATEWAY_CACHE_FAILURES_UNHEALTHY",
    "MIM_GATEWAY_CACHE_INTERVAL_SECONDS",
    "MIM_GATEWAY_CACHE_LEASE_SECONDS",
    "MIM_GATEWAY_CACHE_MERGE_AFTER_SECONDS",
    "MIM_GATEWAY_GZIP_MIN_BYTES",
    "MIM_GATEWAY_LIVE_TAIL_OVERLAP_SECONDS",
    "MIM_GATEWAY_METRICS_PORT",
    "MIM_GATEWAY_POOL_SIZE",
    "MIM_GATEWAY_REUSE_PORT",
    "MIM_GATEWAY_SHUTDOWN_GRACE_SECONDS",
}
#: Node-wide settings that guard the edge too.
NODE_WIDE = {"MIM_ALLOWED_NETWORKS", "MIM_MIN_POW", "MIM_TLS"}


def _shown(value: object) -> str:
    """A default as the document writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "none" if value in ("", None) else str(value)


def test_every_edge_setting_is_in_the_security_document() -> None:
    """Each gateway setting that bounds what a stranger may do has a row in docs/security.md
    naming its default, and every variable the document names exists."""
    text = SECURITY.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `MIM_")]
    variables = {env_name(GatewaySettings, f): f for f in GatewaySettings.model_fields}
    edge = {v for v in variables if v.startswith("MIM_GATEWAY_")} - NOT_EDGE | NODE_WIDE
    for variable in sorted(edge):
        row = next((r for r in rows if f"`{variable}`" in r.split("|")[1]), None)
        assert row is not None, f"{variable} has no row in docs/security.md"
        default = GatewaySettings.model_fields[variables[variable]].default
        assert _shown(default) in row.split("|")[2], (variable, row)
    named = set(re.findall(r"`(MIM_[A-Z0-9_]+)`", text))
    node = {env_name(NodeSupervisorSettings, f) for f in NodeSupervisorSettings.model_fields}
    others = {"MIM_API_TOKEN", "MIM_SYNCER_ADDRESSES_PER_SYNC"} | node  # CLI, syncer, mimrelay up
    assert named - set(variables) - others == set()
