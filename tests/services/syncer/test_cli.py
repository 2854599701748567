"""``mimrelay sync HOST:PORT`` and ``mimrelay peers`` against live nodes."""

from __future__ import annotations

import json
import time

from relay.settings import DAY_SECONDS
from tests.services.syncer.conftest import Nodes
from tests.services.syncer.node import forum, make


async def test_sync_command_pulls_and_peers_lists_the_remote(nodes: Nodes) -> None:
    """``mimrelay sync`` from B pulls A's objects and prints a summary; ``mimrelay peers`` then
    shows A first-party with B's cursors for it."""
    a, b = await nodes("A"), await nodes("B", syncer=True)
    objects = forum(int(time.time()), "cli")
    await a.hold(objects)
    code, out, err = await b.cli("sync", "--progress", f"http://{a.address}")
    assert code == 0, err
    assert out.startswith("ok"), out
    assert "8/8" in err
    await b.wait_holding(objects)
    code, out, err = await b.cli("peers", "--json")
    assert code == 0, err
    listed = json.loads(out)
    mine = [x for x in listed["addresses"] if x["port"] == a.port]
    assert mine and mine[0]["first_party"] and mine[0]["type"] == 2
    assert {c["endpoint"] for c in listed["cursors"]} >= {"posts", "boards", "keys"}
    code, _, err = await b.cli("sync", "not-an-address")
    assert code == 2 and "HOST:PORT" in err


async def test_sync_command_says_what_it_held_beyond_the_event_horizon(nodes: Nodes) -> None:
    """Objects from beyond B's event horizon with nothing newer under them are not pulled, and
    the summary line says how many were held and dropped."""
    a, b = await nodes("A"), await nodes("B", syncer=True)
    old = int(time.time()) - 200 * DAY_SECONDS  # beyond the default 180-day memory
    board = make("board", {"name": "long quiet"}, old)
    thread = make("thread", {"board": board.fingerprint, "name": "also quiet"}, old + 10)
    await a.submit([board, thread])
    await a.wait_holding([board, thread])
    code, out, err = await b.cli("sync", f"http://{a.address}")
    assert code == 0, err
    assert "2 from beyond the event horizon (0 admitted, 2 dropped)" in out, out
    held = await b.held()
    assert ("board", board.fingerprint) not in held
    assert ("thread", thread.fingerprint) not in held
