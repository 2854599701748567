"""The node a command talks to, found by itself, and one quick connection to each of its servers.

``mimrelay up`` writes the URLs of the NATS and PostgreSQL it started (on free ports) to
``<data_dir>/node.json``; a command reads them from the same data directory (``--data-dir``, else
``MIM_DATA_DIR``, else ``./data``), so no variable needs exporting. ``MIM_NATS_URL``,
``MIM_DATABASE_URL`` and ``MIM_STREAM_PREFIX``, when set, win: a node run by compose or spread
over machines has no ``node.json``.

When a command needs a server and no node runs there, it says so in one line and exits 1 at once.
A server is tried once, with a timeout of ``CONNECT_TIMEOUT_SECONDS``: a command never waits out
the retries a service makes at start-up.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import asyncpg
from nats.aio.client import Client as NATS

from relay.cli.running import REFUSED, fail, load_settings
from relay.connect import close_nats, close_pool, connect_nats, connect_pool
from relay.node_state import STATE_FILE, read_state
from relay.settings import NodeSettings

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "Need",
    "alive",
    "api_url",
    "database",
    "find_node",
    "miners",
    "nats_client",
    "running_state",
    "shown",
]

CONNECT_TIMEOUT_SECONDS: Final = 3.0

Need = Literal["nats", "database"]
#: What a need is read from: the variable that wins, the settings field, the node.json key.
_SOURCES: Final[dict[Need, tuple[str, str, str]]] = {
    "nats": ("MIM_NATS_URL", "nats_url", "nats_url"),
    "database": ("MIM_DATABASE_URL", "database_url", "database_url"),
}


def shown(path: Path) -> str:
    """``path`` as a user would type it (``./data`` rather than ``data``)."""
    text = str(path)
    return text if path.is_absolute() or text.startswith(".") else f"./{text}"


def alive(pid: object) -> bool:
    """Whether a process ``pid`` exists."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_state(data_dir: Path) -> dict[str, Any]:
    """The ``node.json`` of the node running in ``data_dir``; one line and exit 1 if none runs."""
    try:
        state = read_state(data_dir)
    except FileNotFoundError:
        fail(
            f"no node is running in {shown(data_dir)}: start one with `mimrelay up`"
            " (or name its data directory with --data-dir)",
            REFUSED,
        )
    except (OSError, ValueError) as exc:
        fail(f"cannot read {shown(data_dir / STATE_FILE)}: {exc}", REFUSED)
    if state.get("state") != "running" or not alive(state.get("pid")):
        again = "" if data_dir == Path("data") else f" --data-dir {shown(data_dir)}"
        fail(
            f"the node in {shown(data_dir)} is not running: start it with `mimrelay up{again}`",
            REFUSED,
        )
    return state


def find_node(data_dir: Path | None, verbose: int, *needs: Need) -> NodeSettings:
    """The node-wide settings, with the URL of each server in ``needs`` and the stream prefix
    taken from the running node unless their variables are set; logs as ``verbose`` asks."""
    settings = load_settings(data_dir, verbose)
    missing = [need for need in needs if not os.environ.get(_SOURCES[need][0])]
    if not missing:
        return settings
    state = running_state(settings.data_dir)
    updates: dict[str, Any] = {}
    for need in missing:
        variable, field, key = _SOURCES[need]
        url = str(state.get(key, ""))
        if ":***@" in url:
            fail(f"{shown(settings.data_dir / STATE_FILE)} hides the password: set {variable}")
        updates[field] = url
    if "nats" in missing and not os.environ.get("MIM_STREAM_PREFIX"):
        updates["stream_prefix"] = state.get("stream_prefix", settings.stream_prefix)
    return settings.model_copy(update=updates)


def miners(settings: NodeSettings) -> NodeSettings:
    """``settings`` pointing at the NATS of the running node whose miners may mine, if one runs;
    else with an empty ``nats_url``: the work is then searched in this process."""
    if os.environ.get("MIM_NATS_URL"):
        return settings
    try:
        state = read_state(settings.data_dir)
    except (OSError, ValueError):
        state = {}
    if state.get("state") != "running" or not alive(state.get("pid")):
        return settings.model_copy(update={"nats_url": ""})
    prefix = os.environ.get("MIM_STREAM_PREFIX") or state.get("stream_prefix")
    return settings.model_copy(
        update={"nats_url": state.get("nats_url", ""), "stream_prefix": prefix}
    )


def api_url(state: Mapping[str, Any]) -> str:
    """Where the node's Mim API listens, as ``mimrelay up`` recorded it."""
    return str(state.get("api_url", ""))


@contextlib.asynccontextmanager
async def nats_client(settings: NodeSettings, name: str) -> AsyncIterator[NATS]:
    """A connection to the node's NATS, tried once; drained and closed on the way out."""
    nc = await connect_nats(
        settings.nats_url, f"mimrelay-{name}", attempts=1, connect_timeout=CONNECT_TIMEOUT_SECONDS
    )
    try:
        yield nc
    finally:
        await close_nats(nc, CONNECT_TIMEOUT_SECONDS)


@contextlib.asynccontextmanager
async def database(
    settings: NodeSettings, size: int = 1, *, read: bool = False
) -> AsyncIterator[asyncpg.Pool]:
    """A pool of ``size`` connections to the node's PostgreSQL, tried once: the primary, or with
    ``read`` (a command that only reads) ``MIM_DATABASE_READ_URL`` when it is set."""
    pool = await connect_pool(
        settings.read_url if read else settings.database_url,
        attempts=1,
        min_size=1,
        max_size=size,
        timeout=CONNECT_TIMEOUT_SECONDS,
    )
    try:
        yield pool
    finally:
        await close_pool(pool, CONNECT_TIMEOUT_SECONDS)
