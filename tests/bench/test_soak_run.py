"""bench/soak_run.py: where a run keeps its nodes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from soak_run import Run, options
from tests.helpers.procs import REPO


def _run(*argv: str) -> Run:
    return Run(options("a run", minutes=1.0).parse_args(list(argv)), prefix="soak")


def test_a_run_refuses_an_out_holding_an_earlier_runs_node(tmp_path: Path) -> None:
    """Node A started on an earlier run's data would count that run's objects as this run's:
    the run stops before starting anything, naming the folder."""
    (tmp_path / "a" / "nats").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"/a holds the node of an earlier run"):
        _run("--out", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_a_run_takes_a_new_or_empty_out_and_a_running_node(tmp_path: Path) -> None:
    """A new folder is made; a folder with no node in it is taken as it is; and with ``--node``
    and ``--no-peer`` no node is started there, so an earlier one is no matter."""
    assert _run("--out", str(tmp_path / "new")).out.is_dir()
    (tmp_path / "empty").mkdir()
    assert _run("--out", str(tmp_path / "empty")).out == tmp_path / "empty"
    (tmp_path / "old" / "a").mkdir(parents=True)
    (tmp_path / "old" / "b").mkdir()
    running = _run("--out", str(tmp_path / "old"), "--node", str(tmp_path / "x"), "--no-peer")
    assert running.out == tmp_path / "old"
    with pytest.raises(SystemExit, match=r"/b holds"):
        _run("--out", str(tmp_path / "old"), "--node", str(tmp_path / "x"))


def test_sigterm_stops_the_nodes_the_run_started(tmp_path: Path) -> None:
    """An operator stopping a soak with SIGTERM (``kill``, a CI timeout) finds the node it
    started stopped with it, not left running on its ports."""
    soak = subprocess.Popen(
        [sys.executable, "-u", str(REPO / "bench" / "soak.py"), "--minutes", "10", "--rate", "5",
         "--no-peer", "--difficulty", "2", "--request-pow", "2", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert soak.stdout is not None
        seen: list[str] = []
        for line in soak.stdout:
            seen.append(line)
            if line.startswith("driving node A"):
                break
        else:
            raise AssertionError("".join(seen))
        node = json.loads((tmp_path / "a" / "node.json").read_text())
        soak.send_signal(signal.SIGTERM)
        rest, _ = soak.communicate(timeout=90)
    finally:
        soak.kill()
    assert soak.returncode == 1, rest
    assert "node A stopped" in rest
    assert "stopped by SIGTERM" in rest
    for pid in (node["pid"], node["nats_pid"], node["postgres_pid"]):
        assert not _alive(pid), f"{pid} still runs"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
