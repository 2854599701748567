"""What a ``mimrelay up`` node tells about itself: ``node.json``, Prometheus targets, the banner.

- ``<data_dir>/node.json`` describes the node (pids, URLs, the servers' and services' state) for
  ``mimrelay status``; the supervisor rewrites it on every change and marks it ``stopped`` at
  the end. Each write replaces the file at once, so a reader never sees half of it.
- ``<data_dir>/prometheus-targets.json`` lists the metrics endpoints for Prometheus' file
  discovery (``deploy/prometheus/prometheus-up.yml``).
- The banner printed once the node runs says where the API, the metrics and the servers are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from relay.logging import get_logger
from relay.node_services import ServiceSpec

__all__ = ["STATE_FILE", "TARGETS_FILE", "announce", "read_state", "write_state"]

STATE_FILE: Final = "node.json"
TARGETS_FILE: Final = "prometheus-targets.json"

_log = get_logger("relay.node")


def _replace(path: Path, document: object) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_state(data_dir: Path, state: dict[str, Any], specs: Sequence[ServiceSpec]) -> None:
    """Write ``node.json`` and the Prometheus targets of ``specs`` into ``data_dir``."""
    _replace(data_dir / STATE_FILE, state)
    groups = [
        {
            "targets": [f"127.0.0.1:{spec.metrics_port}"],
            "labels": {"job": f"mim-{spec.service}", "replica": spec.name},
        }
        for spec in specs
    ]
    _replace(data_dir / TARGETS_FILE, groups)


def read_state(data_dir: Path) -> dict[str, Any]:
    """The ``node.json`` of ``data_dir``; ``FileNotFoundError`` if no node ever ran there."""
    state: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
    return state


def announce(
    say: Callable[[str], None], state: dict[str, Any], specs: Sequence[ServiceSpec]
) -> None:
    """Tell where everything of the node described by ``state`` listens, and log it once."""
    data_dir = Path(state["data_dir"])
    say(f"mimrelay node up; data in {data_dir}")
    if state["api_url"]:
        say(f"  API          {state['api_url']}")
    if state.get("local_api_url"):
        say(f"  local API    {state['local_api_url']} (submit, tokens, /docs)")
    for spec in specs:
        say(f"  {spec.name:<12} http://127.0.0.1:{spec.metrics_port}/metrics")
    say(f"  NATS         {state['nats_url']}")
    say(f"  PostgreSQL   {state['database_url']}")
    say(f"  state        {data_dir / STATE_FILE} (mimrelay status)")
    _log.info(
        "node_started", api_url=state["api_url"], data_dir=str(data_dir),
        services={spec.name: spec.metrics_port for spec in specs},
    )  # fmt: skip
