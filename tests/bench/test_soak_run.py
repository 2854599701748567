"""bench/soak_run.py: where a run keeps its nodes."""

from __future__ import annotations

from pathlib import Path

import pytest

from soak_run import Run, options


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
