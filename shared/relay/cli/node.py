"""``mimrelay up`` and ``mimrelay status``: run the whole node on this machine, and look at it.

``up`` runs ``relay.node.NodeSupervisor``: embedded nats-server and PostgreSQL under the data
directory (unless ``MIM_NATS_URL`` / ``MIM_DATABASE_URL`` are set), then every service as a child
process, until Ctrl-C or SIGTERM. Options override the ``MIM_NODE_*`` settings.

``status`` reads ``<data_dir>/node.json`` and asks the running node: the state of nats-server and
PostgreSQL (running, restarting, failed, or external) and whether each answers at its address,
each service's ``/healthz`` (with the reason when it is not healthy), the depth of each stream
and consumer, objects stored per kind, and known addresses. Exit status 0 when the node runs,
both servers answer and every service is healthy; 1 when anything is down.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from relay import RelayError
from relay import logging as relay_logging
from relay.embedded import free_port
from relay.embedded.process import accepts
from relay.node import NodeSupervisor, NodeSupervisorSettings, plan_services, read_state
from relay.settings import LocalApiSettings, NetworkSettings, NodeSettings, load

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
@click.option("--port", type=click.IntRange(0, 65535), help="Port of the Mim API [8090].")
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
    if api_port == 0:  # fixed now, so health checks, status and restarts know it
        api_port = free_port()
    local = load(LocalApiSettings)
    local_port = local.local_port or free_port()
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
        announce=lambda line: click.echo(line, err=True),
    )
    local_url = local.model_copy(update={"local_port": local_port}).local_url
    click.echo(f"  local API    {local_url} (submit, tokens, /docs)", err=True)
    sys.exit(supervisor.run())


# --- status -------------------------------------------------------------------------------------


def _health(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=_HEALTH_TIMEOUT_SECONDS) as response:  # noqa: S310
            body = json.loads(response.read() or b"{}")
            return {"healthy": True, "status": response.status, **body}
    except urllib.error.HTTPError as exc:
        try:
            body = json.loads(exc.read() or b"{}")
        except ValueError:
            body = {}
        return {"healthy": False, "status": exc.code, **body}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"healthy": False, "status": None, "reason": f"unreachable: {exc}"}


async def _streams(nats_url: str, prefix: str) -> dict[str, Any]:
    from relay.bus import Layout  # noqa: PLC0415
    from relay.connect import close_nats, connect_nats  # noqa: PLC0415

    layout = Layout(prefix)
    nc = await connect_nats(nats_url, "status", attempts=1, delay=0.1)
    try:
        js = nc.jetstream()
        streams: dict[str, Any] = {}
        for name in (layout.ingest_stream, layout.accepted_stream, layout.rejected_stream):
            info = await js.stream_info(name)
            streams[name] = {"messages": info.state.messages, "bytes": info.state.bytes}
        for stream, consumer in (
            (layout.ingest_stream, layout.validator_consumer),
            (layout.accepted_stream, layout.store_consumer),
        ):
            cinfo = await js.consumer_info(stream, consumer)
            streams[stream]["consumer"] = {
                "name": consumer,
                "pending": cinfo.num_pending,
                "unacked": cinfo.num_ack_pending,
            }
        return streams
    finally:
        await close_nats(nc, 2.0)


async def _database(database_url: str) -> dict[str, Any]:
    from relay.connect import close_pool, connect_pool  # noqa: PLC0415
    from relay.db import objects  # noqa: PLC0415

    pool = await connect_pool(database_url, attempts=1, max_size=1)
    try:
        counts = await objects.counts(pool)
        addresses = counts.pop("address", 0)
        return {"objects": counts, "addresses": addresses}
    finally:
        await close_pool(pool, 2.0)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _why_down(entry: dict[str, Any], running: bool) -> str | None:
    """Why the server of ``entry`` (a ``node.json`` entry) is down now, or None if it answers."""
    parts = urlsplit(entry.get("url", ""))
    where = f"{parts.hostname}:{parts.port}"
    state = entry.get("state", "external")
    if state == "restarting":
        since = entry.get("down_since") or time.time()
        return (
            f"restarting: exited with status {entry.get('last_exit')} "
            f"{time.time() - since:.1f}s ago"
        )
    if state != "external" and not running:
        return f"{state}: the node is not running"
    if state not in ("running", "external"):
        return f"{state}: see {entry.get('log') or 'the node log'}"
    if state == "running" and not _alive(entry.get("pid")):
        return f"exited (pid {entry.get('pid')}); the node is about to restart it"
    if parts.hostname is None or parts.port is None or not accepts(parts.hostname, parts.port):
        return f"nothing answers at {where}"
    return None


def _servers(state: dict[str, Any], running: bool) -> list[dict[str, Any]]:
    entries = state.get("servers") or {
        "nats": {"url": state.get("nats_url", "")},
        "postgres": {"url": state.get("database_url", "")},
    }
    report = []
    for name, entry in entries.items():
        reason = _why_down(entry, running)
        report.append({
            "name": name, "state": entry.get("state", "external"), "pid": entry.get("pid"),
            "restarts": entry.get("restarts", 0), "url": entry.get("url", ""),
            "up": reason is None, **({"reason": reason} if reason else {}),
        })  # fmt: skip
    return report


def _gather(state: dict[str, Any], settings: NodeSettings) -> dict[str, Any]:
    """Ask the node described by ``state`` how it is; connection URLs from the env win."""
    running = state.get("state") == "running" and _alive(state.get("pid"))
    report: dict[str, Any] = {"running": running, "data_dir": state["data_dir"]}
    report["api_url"] = state.get("api_url", "")
    report["servers"] = _servers(state, running)
    report["services"] = [
        {"name": s["name"], "pid": s["pid"], "restarts": s["restarts"], **_health(s["health_url"])}
        for s in state.get("services", [])
    ]
    nats_url = os.environ.get("MIM_NATS_URL") or state.get("nats_url", "")
    db_url = (
        settings.database_read_url
        or os.environ.get("MIM_DATABASE_URL")
        or state.get("database_url", "")
    )
    prefix = state.get("stream_prefix", settings.stream_prefix)
    try:
        report["streams"] = asyncio.run(_streams(nats_url, prefix))
    except Exception as exc:  # status reports what it cannot reach instead of failing
        report["streams"] = {"error": str(exc) or repr(exc)}
    try:
        report.update(asyncio.run(_database(db_url)))
    except Exception as exc:  # same
        report["objects"] = {"error": str(exc) or repr(exc)}
    report["healthy"] = (
        running
        and all(s["up"] for s in report["servers"])
        and all(s["healthy"] for s in report["services"])
    )
    return report


def _print(report: dict[str, Any]) -> None:
    click.echo(
        f"node     {'running' if report['running'] else 'NOT running'}  {report['data_dir']}"
    )
    click.echo(f"API      {report['api_url']}")
    for s in report["servers"]:
        word = s["state"] if s["up"] else f"DOWN ({s['reason']})"
        pid = f"pid {s['pid'] or '-'!s:<8} " if s["state"] != "external" else ""
        click.echo(f"{s['name']:<8} {word}  {pid}restarts {s['restarts']}  {s['url']}")
    for s in report["services"]:
        word = "healthy" if s["healthy"] else f"UNHEALTHY ({s.get('reason', s['status'])})"
        click.echo(f"  {s['name']:<12} pid {s['pid']!s:<8} restarts {s['restarts']:<3} {word}")
    streams = report["streams"]
    if "error" in streams:
        click.echo(f"streams  unavailable: {streams['error']}")
    else:
        for name, info in streams.items():
            consumer = info.get("consumer")
            extra = f", {consumer['pending']} pending for {consumer['name']}" if consumer else ""
            click.echo(f"stream   {name:<16} {info['messages']} messages{extra}")
    objects = report.get("objects", {})
    if "error" in objects:
        click.echo(f"objects  unavailable: {objects['error']}")
    else:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(objects.items())) or "none"
        click.echo(f"objects  {counts}")
        click.echo(f"addresses {report['addresses']}")


@click.command("status")
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Node data [./data]."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(data_dir: Path | None, as_json: bool) -> None:
    """Show the servers' state, each service's health, stream depths, objects and addresses.

    Exits 1 when the node is not running or anything in it is down.
    """
    settings = load(NodeSettings, **({"data_dir": data_dir} if data_dir else {}))
    relay_logging.configure(
        "cli", settings.model_copy(update={"log_level": "error"}), stream=sys.stderr
    )
    try:
        state = read_state(settings.data_dir)
    except FileNotFoundError:
        click.echo(f"error: no node has run in {settings.data_dir} (no node.json)", err=True)
        sys.exit(1)
    report = _gather(state, settings)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print(report)
    sys.exit(0 if report["healthy"] else 1)
