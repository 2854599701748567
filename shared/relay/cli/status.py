"""``mimrelay status``: how the node running in the data directory is doing.

It reads ``<data_dir>/node.json`` (``relay.cli.local``) and asks the node: the state of
nats-server and PostgreSQL (running, restarting, failed, or external) and whether each answers at
its address, each service's ``/healthz`` (with the reason when it is not healthy), the depth of
each stream and consumer, objects stored per kind, and known addresses; a part it cannot reach is
shown as unavailable. Exit status 0 when the node runs, both servers answer and every service is
healthy; 1 when anything is down.

``status --url api|local|nats|database`` prints only where that part of the running node is
reached (``local``: the local API; ``MIM_NATS_URL``, ``MIM_DATABASE_URL`` and
``MIM_GATEWAY_LOCAL_*`` win, as for every command), for scripts such as
``curl "$(mimrelay status --url api)/v0/status"``.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import click

from relay.bus import Layout
from relay.cli.api import local_api
from relay.cli.local import (
    alive,
    api_url,
    database,
    find_node,
    nats_client,
    running_state,
    shown,
)
from relay.cli.running import REFUSED, fail, load_settings, node_options
from relay.db import objects
from relay.embedded.process import accepts
from relay.node_state import read_state
from relay.settings import NodeSettings

_HEALTH_TIMEOUT_SECONDS: Final = 2.0


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


async def _streams(settings: NodeSettings) -> dict[str, Any]:
    layout = Layout.from_settings(settings)
    async with nats_client(settings, "status") as nc:
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


async def _database(settings: NodeSettings) -> dict[str, Any]:
    async with database(settings, read=True) as pool:
        counts = await objects.counts(pool)
    addresses = counts.pop("address", 0)
    return {"objects": counts, "addresses": addresses}


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
    if state == "running" and not alive(entry.get("pid")):
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


def _gather(state: dict[str, Any], settings: NodeSettings | None) -> dict[str, Any]:
    """Ask the node described by ``state`` how it is, through ``settings``' URLs (None: the
    node is not running)."""
    report: dict[str, Any] = {"running": settings is not None, "data_dir": state["data_dir"]}
    report["api_url"] = api_url(state)
    report["local_api_url"] = state.get("local_api_url", "")
    report["servers"] = _servers(state, report["running"])
    report["services"] = [
        {"name": s["name"], "pid": s["pid"], "restarts": s["restarts"], **_health(s["health_url"])}
        for s in state.get("services", [])
    ]
    if settings is None:
        report["streams"] = report["objects"] = {"error": "the node is not running"}
    else:
        try:
            report["streams"] = asyncio.run(_streams(settings))
        except Exception as exc:  # status reports what it cannot reach instead of failing
            report["streams"] = {"error": str(exc) or repr(exc)}
        try:
            report.update(asyncio.run(_database(settings)))
        except Exception as exc:  # same
            report["objects"] = {"error": str(exc) or repr(exc)}
    report["healthy"] = (
        report["running"]
        and all(s["up"] for s in report["servers"])
        and all(s["healthy"] for s in report["services"])
    )
    return report


def _print(report: dict[str, Any]) -> None:
    click.echo(
        f"node     {'running' if report['running'] else 'NOT running'}  {report['data_dir']}"
    )
    click.echo(f"API      {report['api_url']}")
    if report.get("local_api_url"):
        click.echo(f"local    {report['local_api_url']}")
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
    counts = report.get("objects", {})
    if "error" in counts:
        click.echo(f"objects  unavailable: {counts['error']}")
    else:
        listed = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
        click.echo(f"objects  {listed}")
        click.echo(f"addresses {report['addresses']}")


def _url(part: str, data_dir: Path | None, verbose: int) -> str:
    if part == "api":
        return api_url(running_state(load_settings(data_dir, verbose).data_dir))
    if part == "local":
        return local_api(None, data_dir, verbose)
    settings = find_node(data_dir, verbose, "nats" if part == "nats" else "database")
    return settings.nats_url if part == "nats" else settings.database_url


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--url",
    "part",
    type=click.Choice(["api", "local", "nats", "database"]),
    help="Print only where this part of the running node is reached.",
)
@node_options
def status(as_json: bool, part: str | None, data_dir: Path | None, verbose: int) -> None:
    """Show the servers' state, each service's health, stream depths, objects and addresses.

    Exits 1 when the node is not running or anything in it is down.
    """
    if part is not None:
        click.echo(_url(part, data_dir, verbose))
        return
    base = load_settings(data_dir, verbose)
    try:
        state = read_state(base.data_dir)
    except FileNotFoundError:
        fail(
            f"no node is running in {shown(base.data_dir)}: start one with `mimrelay up`"
            " (or name its data directory with --data-dir)",
            REFUSED,
        )
    running = state.get("state") == "running" and alive(state.get("pid"))
    settings = find_node(data_dir, verbose, "nats", "database") if running else None
    report = _gather(state, settings)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print(report)
    raise SystemExit(0 if report["healthy"] else 1)
