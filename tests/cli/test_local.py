"""Finding the local node: every command that needs one says in one line, at once, that none
runs, tries a node that does not answer once, and logs only when asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay.embedded import free_port
from relay.node import STATE_FILE
from tests.helpers.procs import REPO

#: Every command that talks to a running node, with arguments that are otherwise fine.
NODE_COMMANDS = [
    ["submit", "objects.jsonl"],
    ["import", "objects.jsonl"],
    ["token", "list"],
    ["block", "ab" * 32],
    ["unblock", "ab" * 32],
    ["blocks"],
    ["export", "--jsonl", "out.jsonl"],
    ["export-static", "site"],
    ["peers"],
    ["sync", "127.0.0.1:9"],
    ["status", "--url", "api"],
    ["status", "--url", "local"],
    ["status", "--url", "database"],
]

#: The bound on any of these commands: far below the 30 tries of a service starting up.
PROMPTLY = 20


def mimrelay(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``mimrelay ARGS`` in ``cwd``, as from a shell with no ``MIM_*`` variable but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MIM_")}
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=PROMPTLY,
        check=False,
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "objects.jsonl").write_text('{"location": "h", "port": 1}\n')
    return tmp_path


@pytest.mark.parametrize("args", NODE_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_without_a_node_one_line_says_so(folder: Path, args: list[str]) -> None:
    """In a folder where no node ever ran, the command exits 1 with one line naming the data
    directory and `mimrelay up`, and writes nothing else."""
    result = mimrelay(folder, *args)
    assert result.returncode == 1
    assert result.stderr == (
        "error: no node is running in ./data: start one with `mimrelay up`"
        " (or name its data directory with --data-dir)\n"
    )
    assert result.stdout == ""
    assert not (folder / "out.jsonl").exists()


def _state(data_dir: Path, pid: int, port: int) -> None:
    data_dir.mkdir()
    state = {
        "state": "running",
        "pid": pid,
        "data_dir": str(data_dir),
        "stream_prefix": "MIM",
        "api_url": f"http://127.0.0.1:{port}",
        "local_api_url": f"http://127.0.0.1:{port}",
        "nats_url": f"nats://127.0.0.1:{port}",
        "database_url": f"postgresql://mimrelay@127.0.0.1:{port}/mimrelay",
        "services": [],
    }
    (data_dir / STATE_FILE).write_text(json.dumps(state))


def test_a_node_that_stopped_uncleanly_is_named_with_its_directory(folder: Path) -> None:
    """A node.json saying running whose process is gone, in a directory named by --data-dir or
    MIM_DATA_DIR, is reported as not running, with the command that starts it there."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    _state(folder / "node2", int(dead.stdout), free_port())
    for result in (
        mimrelay(folder, "blocks", "--data-dir", "node2"),
        mimrelay(folder, "blocks", MIM_DATA_DIR="node2"),
    ):
        assert result.returncode == 1
        assert result.stderr == (
            "error: the node in ./node2 is not running:"
            " start it with `mimrelay up --data-dir ./node2`\n"
        )


def test_a_running_node_that_does_not_answer_is_tried_once(folder: Path) -> None:
    """A node.json naming a live process but servers that do not listen: each command fails
    after one try, in one line, without a traceback (submit and token name the local API they
    tried); `-v` logs that try."""
    port = free_port()
    _state(folder / "data", os.getpid(), port)
    for args in (["blocks"], ["peers"], ["export", "--jsonl", "out.jsonl"]):
        result = mimrelay(folder, *args)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("error: ")
        assert "did not answer after 1 attempt:" in result.stderr
        assert result.stderr.count("\n") == 1
    for args in (["submit", "objects.jsonl"], ["token", "list"]):
        result = mimrelay(folder, *args)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(
            f"error: cannot reach the gateway at http://127.0.0.1:{port}"
        )
        assert result.stderr.count("\n") == 1
    loud = mimrelay(folder, "blocks", "-v", MIM_LOG_FORMAT="json")
    waits = [json.loads(line) for line in loud.stderr.splitlines() if line.startswith("{")]
    assert [w["attempt"] for w in waits if w["event"] == "dependency_wait"] == [1]


def test_explicit_urls_win_over_node_json(folder: Path) -> None:
    """With MIM_NATS_URL set, a command needs no node.json and reaches that server."""
    port = free_port()
    result = mimrelay(folder, "blocks", MIM_NATS_URL=f"nats://127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"nats://127.0.0.1:{port}" in result.stderr
    assert "no node is running" not in result.stderr


def test_commands_that_need_no_node_work_without_one(folder: Path) -> None:
    """keygen, create (mining here), fingerprint and mine run in a folder without a node."""
    assert mimrelay(folder, "keygen", "--out", "k.key").returncode == 0
    made = mimrelay(folder, "create", "key", "--key", "k.key", "--difficulty", "4",
                    "--set", "name=offline")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stderr == ""
    (folder / "key.json").write_text(made.stdout)
    assert (
        mimrelay(folder, "fingerprint", "key.json").stdout
        == json.loads(made.stdout)["fingerprint"] + "\n"
    )
    mined = mimrelay(folder, "mine", "--difficulty", "4", "--no-progress", "text")
    assert json.loads(mined.stdout)["where"] == "local"
