"""``mimrelay up`` heals itself: its nats-server and PostgreSQL, killed with -9 under a steady
stream of submissions, come back by themselves, and nothing acknowledged is lost or doubled.

One test walks the whole story (a kill of each server in turn, under the same stream), because the
second kill must find the node as the first one left it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mim import canonical
from mim.entities import Provable
from relay.embedded import free_port
from tests.helpers.node import (
    DIFFICULTY,
    KEY,
    WAIT_SECONDS,
    Node,
    http_post_json,
    node_environment,
    wait_until,
)
from tests.helpers.objects import signed_posts
from tests.helpers.procs import alive, parse_lines

#: From the kill -9 of a server to a node that `mimrelay status` calls healthy again, at most.
RECOVERY_BOUND_SECONDS = 60.0
#: The node's pause before it restarts a dead server: long enough for `mimrelay status` (a fresh
#: Python process each time) to see the outage, short next to the bound.
SERVER_PAUSE_SECONDS = 4.0
#: Submissions made before the first kill, and between and after the outages.
STEADY = 40
#: Every service of the node, each of which must say NATS is unreachable while it is.
SERVICES = ("gateway", "store", "validator", "miner", "syncer")


class Submitter(threading.Thread):
    """Submits one post at a time to the node's local API, steadily, and remembers which were
    acknowledged (202, verdict ok) and which were refused (and with what status)."""

    def __init__(self, api: str, objects: list[Provable], pause: float = 0.05) -> None:
        super().__init__(name="submitter", daemon=True)
        self.api = api
        self.objects = objects
        self.pause = pause
        self.acked: list[str] = []
        self.refused: list[tuple[str, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        for obj in self.objects:
            if self.halt.is_set():
                return
            body = {"kind": "post", "object": json.loads(canonical.encode(obj))}
            try:
                status, answer = http_post_json(f"{self.api}/api/submit", body)
            except OSError:
                status, answer = 0, None
            queued = answer.get("queued", []) if isinstance(answer, dict) else []
            if status == 202 and queued and queued[0]["verdict"]["ok"]:
                self.acked.append(obj.fingerprint)
            else:
                self.refused.append((obj.fingerprint, status))
            time.sleep(self.pause)

    def wait_for(self, count: int) -> None:
        """Until ``count`` more submissions than now were acknowledged."""
        target = len(self.acked) + count
        wait_until(f"{target} acknowledged submissions", lambda: len(self.acked) >= target)


def _stored_posts(database_url: str) -> dict[str, int]:
    """How many rows the store holds per post fingerprint."""

    async def query() -> dict[str, int]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT fingerprint, count(*) AS n FROM objects WHERE kind = 'post' "
                "GROUP BY fingerprint"
            )
        finally:
            await conn.close()
        return {row["fingerprint"]: row["n"] for row in rows}

    return asyncio.run(query())


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Start a `mimrelay up` node with extra settings; it is killed at the end if still running."""
    started: list[Node] = []

    def start(**extra: str) -> Node:
        env = node_environment(MIM_DEPENDENCY_CHECK_SECONDS="0.5", **extra)
        started.append(Node(tmp_path / "data", free_port(), env, len(started) + 1))
        return started[-1]

    yield start
    for node in started:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()


def _kill_and_watch(
    node: Node, server: str, down: Callable[[dict[str, Any]], bool]
) -> tuple[dict[str, Any], float]:
    """Kill ``server`` (-9, its pid from node.json); the first status report that ``down``
    accepts, and the seconds from the kill until `mimrelay status` calls the node healthy."""
    pid = node.state()["servers"][server]["pid"]
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    report = wait_until(
        f"status to report {server} down", lambda: (r := node.status()) and down(r) and r
    )
    remaining = RECOVERY_BOUND_SECONDS - (time.monotonic() - killed)
    wait_until("a healthy node again", lambda: node.status()["exit_code"] == 0, remaining)
    return report, time.monotonic() - killed


def _bound(sock: socket.socket, port: int) -> bool:
    """Whether ``sock`` could bind ``port`` on the loopback now."""
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def _service(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in report["services"] if s["name"] == name)


def _nats_down(report: dict[str, Any]) -> bool:
    nats = next(s for s in report["servers"] if s["name"] == "nats")
    return not nats["up"] and all(
        "nats unreachable" in s.get("reason", "") for s in report["services"]
    )


def _postgres_down(report: dict[str, Any]) -> bool:
    postgres = next(s for s in report["servers"] if s["name"] == "postgres")
    return not postgres["up"] and all(
        "postgres unreachable" in _service(report, name).get("reason", "")
        for name in ("gateway", "store", "syncer")
    )


@pytest.mark.slow
def test_up_comes_back_by_itself_after_nats_then_postgres_are_killed(
    start_node: Callable[..., Node],
) -> None:
    """Under a steady stream of submissions, kill -9 of nats-server and then of PostgreSQL: each
    time `mimrelay status` names what is down (exit 1), the node is healthy again within the bound
    without any service restarting, and every acknowledged post is stored exactly once."""
    node = start_node(MIM_NODE_SERVER_RESTART_MIN_SECONDS=str(SERVER_PAUSE_SECONDS))
    node.wait_healthy()
    objects = signed_posts(
        2000, 19, key=KEY, difficulty=DIFFICULTY, start=int(time.time()) - 2000, label="heal"
    )
    submitter = Submitter(node.local, objects)  # the operator's API takes submissions
    submitter.start()
    try:
        submitter.wait_for(STEADY)
        nats_report, nats_recovery = _kill_and_watch(node, "nats", _nats_down)
        submitter.wait_for(STEADY)
        pg_report, pg_recovery = _kill_and_watch(node, "postgres", _postgres_down)
        submitter.wait_for(STEADY)
    finally:
        submitter.halt.set()
        submitter.join(30)

    print(
        f"recovery from kill -9: nats-server {nats_recovery:.1f}s, PostgreSQL {pg_recovery:.1f}s;"
        f" {len(submitter.acked)} submissions acknowledged, {len(submitter.refused)} refused"
    )
    assert nats_report["exit_code"] == 1
    assert {s["name"].split("-")[0] for s in nats_report["services"]} == set(SERVICES)
    assert next(s for s in nats_report["servers"] if s["name"] == "nats")["reason"].startswith(
        "restarting: exited with status -9"
    )
    assert pg_report["exit_code"] == 1
    assert "objects" in pg_report and "error" in pg_report["objects"]
    assert all(s["healthy"] for s in pg_report["services"] if s["name"].startswith("validator"))

    database_url = node.state()["database_url"]
    acked = set(submitter.acked)

    def all_acked_stored() -> dict[str, int] | None:
        rows = _stored_posts(database_url)
        return rows if acked <= rows.keys() else None

    stored = wait_until("every acknowledged post stored", all_acked_stored)
    assert set(stored.values()) == {1}
    assert stored.keys() <= {o.fingerprint for o in objects}

    state = node.state()
    assert {name: s["restarts"] for name, s in state["servers"].items()} == {
        "nats": 1,
        "postgres": 1,
    }
    assert [s["name"] for s in state["services"] if s["restarts"]] == []
    records = parse_lines(node.log.read_text())
    exits = [(r["server"], r["exit_code"]) for r in records if r["event"] == "server_exited"]
    assert exits == [("nats-server", -signal.SIGKILL), ("postgres", -signal.SIGKILL)]
    restarts = [r["server"] for r in records if r["event"] == "server_restarted"]
    assert restarts == ["nats-server", "postgres"]
    assert node.interrupt() == 0


@pytest.mark.slow
def test_up_stops_with_a_clear_message_when_nats_cannot_come_back(
    start_node: Callable[..., Node],
) -> None:
    """When nats-server is killed and its port taken, so it cannot start again, the node stops
    after its failures in a row: exit status 1, a message naming nats-server and its log, and no
    process of the node left behind."""
    node = start_node(MIM_NODE_SERVER_RESTART_MIN_SECONDS="1", MIM_NODE_SERVER_FAILURES_MAX="2")
    node.wait_healthy()
    state = node.state()
    port = int(state["nats_url"].rsplit(":", 1)[1])
    pids = [s["pid"] for s in state["services"]] + [state["nats_pid"], state["postgres_pid"]]
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        os.kill(state["nats_pid"], signal.SIGKILL)
        wait_until("nats-server's port free", lambda: _bound(squatter, port), 5)
        squatter.listen()
        status = node.proc.wait(WAIT_SECONDS)
    assert status == 1
    log = node.log.read_text()
    message = "mimrelay node stopped: nats-server keeps failing: it exited or did not start 2 times"
    assert message in log
    assert str(node.data_dir / "nats" / "nats-server.log") in log
    assert [pid for pid in pids if alive(pid)] == []
    assert node.state()["state"] == "stopped"
    assert node.state()["servers"]["nats"]["state"] == "failed"
