"""``mimrelay up``: run the whole node on this machine.

``up`` runs ``relay.node.NodeSupervisor``: embedded nats-server and PostgreSQL under the data
directory (unless ``MIM_NATS_URL`` / ``MIM_DATABASE_URL`` are set), then every service as a child
process, until Ctrl-C or SIGTERM. Options override the ``MIM_NODE_*`` settings. It writes where
everything listens to ``<data_dir>/node.json``, which the other commands read to find the node:
the local API (``MIM_GATEWAY_LOCAL_HOST:MIM_GATEWAY_LOCAL_PORT``) included, where ``submit`` and
``token`` go.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from relay import RelayError
from relay import logging as relay_logging
from relay.embedded import free_port
from relay.node import NodeSupervisor, NodeSupervisorSettings, plan_services
from relay.settings import LocalApiSettings, NetworkSettings, load

_HEALTH_TIMEOUT_SECONDS = 2.0


def _load(cls: type[NodeSupervisorSettings], **overrides: Any) -> NodeSupervisorSettings:
    try:
        return load(cls, **{k: v for k, v in overrides.items() if v is not None})
    except RelayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@click.command("up")
@click.option("--validators", type=click.IntRange(0, 64), help="Validator replicas [1].")
@click.option("--miners", type=click.IntRange(0, 64), help="Miner replicas [1].")
@click.option("--host", help="Address of the Mim API [MIM_GATEWAY_HOST, else 0.0.0.0].")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port of the Mim API [8090]; 0 takes a free one, and one for the local API unless"
    " MIM_GATEWAY_LOCAL_PORT names it.",
)
@click.option(
    "--metrics-port-base",
    type=click.IntRange(0, 65000),
    help="First metrics port; replicas take the next ones (0: free ports) [9101].",
)
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Node data [./data]."
)
def up(
    validators: int | None,
    miners: int | None,
    host: str | None,
    port: int | None,
    metrics_port_base: int | None,
    data_dir: Path | None,
) -> None:
    """Run the whole node here: NATS, PostgreSQL, gateway, validators, store, miners, syncer."""
    settings = _load(
        NodeSupervisorSettings,
        validators=validators,
        miners=miners,
        metrics_port_base=metrics_port_base,
        data_dir=data_dir,
    )
    network = load(NetworkSettings)
    api_host = host if host is not None else network.gateway_host
    api_port = port if port is not None else network.gateway_port
    api_port_free = api_port == 0
    if api_port_free:  # fixed now, so health checks, status and restarts know it
        api_port = free_port()
    local = load(LocalApiSettings)
    local_port = local.local_port
    if local_port == 0 or (api_port_free and "local_port" not in local.model_fields_set):
        local_port = free_port()  # so a second node fits beside this one
    relay_logging.configure("node", settings)
    specs = plan_services(
        validators=settings.validators,
        miners=settings.miners,
        metrics_port_base=settings.metrics_port_base,
    )
    shown = "127.0.0.1" if api_host in ("", "0.0.0.0") else api_host  # noqa: S104
    scheme = "https" if network.tls else "http"
    supervisor = NodeSupervisor(
        settings,
        specs,
        extra_env={
            "MIM_GATEWAY_HOST": api_host,
            "MIM_GATEWAY_PORT": str(api_port),
            "MIM_GATEWAY_LOCAL_HOST": local.local_host,
            "MIM_GATEWAY_LOCAL_PORT": str(local_port),
            "MIM_DATA_DIR": str(settings.data_dir.absolute()),
        },
        api_url=f"{scheme}://{shown}:{api_port}",
        local_api_url=local.model_copy(update={"local_port": local_port}).local_url,
        announce=lambda line: click.echo(line, err=True),
    )
    sys.exit(supervisor.run())
