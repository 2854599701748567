"""``mimrelay up`` end to end, as an operator runs it: a real node of child processes.

One test walks the node's life (start, submit, kill -9 a service, Ctrl-C, start again), because
each step needs the state the previous one left; the README test checks the documented commands.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.embedded import free_port
from tests.helpers.metrics import sample, scrape
from tests.helpers.node import Node, node_environment, posts, wait_until
from tests.helpers.procs import REPO, alive, processes_mentioning


@pytest.fixture
def node_env(tmp_path: Path) -> dict[str, str]:
    return node_environment(MIM_NODE_RESTART_MIN_SECONDS="0.2")


@pytest.fixture
def nodes(tmp_path: Path, node_env: dict[str, str]) -> Iterator[Callable[[], Node]]:
    """Start ``mimrelay up`` runs on one data directory; any still running is killed at the end."""
    started: list[Node] = []
    data_dir = tmp_path / "data"
    api_port = free_port()

    def start() -> Node:
        node = Node(data_dir, api_port, node_env, len(started) + 1)
        started.append(node)
        return node

    yield start
    for node in started:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()


@pytest.mark.slow
def test_up_serves_survives_a_killed_service_stops_cleanly_and_keeps_data(
    nodes: Callable[[], Node],
) -> None:
    """Objects submitted to `mimrelay up` are stored and served, survive a kill -9 of a validator,
    Ctrl-C leaves no process behind, and a second `up` on the same data directory still has them.
    """
    node = nodes()
    report = node.wait_healthy()
    names = sorted(s["name"] for s in report["services"])
    assert {"gateway", "store", "validator-1", "validator-2", "miner-1"} <= set(names)

    first = posts(5, seed=1)
    node.submit(first)
    wait_until("5 posts stored", lambda: node.stored("post") == 5)
    wait_until("the 5 posts served by the gateway", lambda: node.serving(first))

    state = node.state()
    victim = next(s for s in state["services"] if s["name"] == "validator-1")
    os.kill(victim["pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        now = next(s for s in node.state()["services"] if s["name"] == "validator-1")
        return now if now["pid"] != victim["pid"] and now["restarts"] == 1 else None

    again = wait_until("validator-1 restarted", restarted)
    assert '"event": "service_exited"' in node.log.read_text()
    node.wait_healthy()
    second = posts(5, seed=2)
    node.submit(second)
    wait_until("10 posts stored", lambda: node.stored("post") == 10)

    state = node.state()
    pids = [s["pid"] for s in state["services"]] + [state["nats_pid"], state["postgres_pid"]]
    assert again["pid"] in pids
    assert node.interrupt() == 0
    assert [pid for pid in pids if alive(pid)] == []
    assert processes_mentioning(str(node.data_dir)) == []
    assert node.state()["state"] == "stopped"

    node = nodes()
    report = node.wait_healthy()
    assert report["objects"] == {"post": 10}
    assert node.interrupt() == 0


@pytest.mark.slow
def test_up_runs_gateway_replicas_on_one_port(tmp_path: Path, node_env: dict[str, str]) -> None:
    """`mimrelay up --gateways 2` runs two healthy gateway replicas answering on the one API port,
    exactly one of them building the caches, and the posts submitted are served."""
    node = Node(tmp_path / "data", free_port(), node_env, 1,
                ("--gateways", "2", "--validators", "1", "--miners", "0"))  # fmt: skip
    try:
        report = node.wait_healthy()
        gateways = [s for s in report["services"] if s["name"].startswith("gateway")]
        submitted = posts(3, seed=3)
        node.submit(submitted)
        wait_until("the 3 posts served", lambda: node.serving(submitted))
        builders = [
            sample(scrape(s["metrics_url"]), "mim_gateway_cache_builder")
            for s in node.state()["services"]
            if s["service"] == "gateway"
        ]
    finally:
        interrupted = node.interrupt()
    assert [g["name"] for g in gateways] == ["gateway-1", "gateway-2"]
    assert all(g["healthy"] for g in gateways)
    assert sorted(b or 0.0 for b in builders) == [0.0, 1.0]
    assert interrupted == 0


def test_readme_commands_are_the_scripts_ci_and_run_use() -> None:
    """The README's first two commands are `./scripts/run` (which runs `mimrelay up`) and
    `./scripts/test`, and `.ci/run` runs exactly the latter."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands[:2] == ["./scripts/run", "./scripts/test"]
    run = (REPO / "scripts" / "run").read_text()
    assert re.search(r"^exec \.venv/bin/mimrelay up\b", run, re.MULTILINE)
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^\./scripts/test\b", ci, re.MULTILINE)
