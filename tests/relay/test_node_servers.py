"""relay.node_servers: the node's real nats-server and PostgreSQL, killed, come back on their ports;
one that cannot come back fails the node with a message naming it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from relay.node_servers import KeptServer, NodeServers
from relay.restarts import Backoff


@pytest.fixture
def servers() -> Iterator[NodeServers]:
    # Outside pytest's basetemp (mode 0700): PostgreSQL's system user must reach it as root.
    data_dir = Path(tempfile.mkdtemp(prefix="mimrelay-node-servers-"))
    kept = NodeServers(data_dir, lambda: Backoff(0.5, 2.0, 60.0), failures_max=2, stop_seconds=10.0)
    try:
        yield kept
    finally:
        kept.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _poll_until(servers: NodeServers, state: str, kept: KeptServer, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while kept.state != state and time.monotonic() < deadline:
        servers.poll()
        time.sleep(0.05)
    assert kept.state == state, kept.entry()


def test_killed_servers_come_back_on_their_urls(servers: NodeServers) -> None:
    """nats-server and PostgreSQL killed with -9 are each noticed, logged with their exit status,
    restarted after the pause on the URL they had, and recorded as restarted once."""
    servers.start()
    assert servers.nats is not None and servers.postgres is not None
    urls = (servers.nats_url, servers.database_url)
    with capture_logs() as logs:
        for kept in (servers.nats, servers.postgres):
            pid = kept.entry()["pid"]
            os.kill(pid, signal.SIGKILL)
            _poll_until(servers, "restarting", kept)
            entry = kept.entry()
            assert (entry["pid"], entry["last_exit"], entry["restarts"]) == (None, -9, 1)
            assert entry["down_since"] is not None
            _poll_until(servers, "running", kept)
            assert kept.entry()["pid"] not in (None, pid)
            assert kept.entry()["down_since"] is None
    assert (servers.nats_url, servers.database_url) == urls
    exited = [e for e in logs if e["event"] == "server_exited"]
    assert [(e["server"], e["exit_code"], e["restart_in_s"]) for e in exited] == [
        ("nats-server", -9, 0.5),
        ("postgres", -9, 0.5),
    ]
    restarted = [e for e in logs if e["event"] == "server_restarted"]
    assert [e["server"] for e in restarted] == ["nats-server", "postgres"]
    assert all(e["down_s"] >= 0.5 for e in restarted)
    assert servers.failure is None


def test_a_server_that_cannot_start_again_fails_the_node(servers: NodeServers) -> None:
    """When nats-server's port is taken after it died, its restart fails; at the second failure in
    a row the servers give up with a message naming nats-server and its log."""
    servers.start()
    assert servers.nats is not None
    port = int(servers.nats_url.rsplit(":", 1)[1])
    pid = servers.nats.entry()["pid"]
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        os.kill(pid, signal.SIGKILL)
        _poll_until(servers, "restarting", servers.nats)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with capture_logs() as logs:
            _poll_until(servers, "failed", servers.nats)
    assert servers.failure is not None
    assert servers.failure.startswith("nats-server keeps failing: ")
    assert str(servers.data_dir / "nats" / "nats-server.log") in servers.failure
    assert [e["event"] for e in logs] == ["server_failing"]
    assert "nats-server exited with status" in logs[0]["error"]
    assert servers.nats.entry()["state"] == "failed"


def _go_memory_limit(pid: int) -> str:
    """The GOMEMLIMIT a process was started with ("" without one)."""
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = entry.decode().partition("=")
        if name == "GOMEMLIMIT":
            return value
    return ""


def test_the_nats_memory_limit_holds_across_a_restart() -> None:
    """A node given a memory limit for nats-server starts it with that Go memory limit, and the
    server it starts again after a SIGKILL has it too."""
    data_dir = Path(tempfile.mkdtemp(prefix="mimrelay-node-servers-"))
    limit = 96 << 20
    servers = NodeServers(data_dir, lambda: Backoff(0.5, 2.0, 60.0), failures_max=2,
                          stop_seconds=10.0, nats_memory_limit=limit)  # fmt: skip
    try:
        servers.start(database_url="postgresql://unused@127.0.0.1:1/unused")
        assert servers.nats is not None
        first = servers.nats.entry()["pid"]
        given = [_go_memory_limit(first)]
        os.kill(first, signal.SIGKILL)
        _poll_until(servers, "restarting", servers.nats)
        _poll_until(servers, "running", servers.nats)
        again = servers.nats.entry()["pid"]
        assert again != first
        given.append(_go_memory_limit(again))
        assert given == [str(limit), str(limit)]
    finally:
        servers.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
