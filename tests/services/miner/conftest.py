"""Fixtures of the miner tests: miner replicas as real subprocesses on the test's own subjects."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from relay.bus import Layout
from tests.helpers.procs import ServiceProcess, alive

StartMiner = Callable[..., ServiceProcess]


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (the miner's search processes)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def layout(stream_prefix: str) -> Layout:
    return Layout(stream_prefix)


@pytest.fixture
def start_miner(nats_url: str, stream_prefix: str) -> Iterator[StartMiner]:
    """Start a ready miner replica (one search process unless told otherwise)."""
    started: list[tuple[ServiceProcess, list[int]]] = []

    def start(workers: int = 1, **env: str) -> ServiceProcess:
        settings = {
            "MIM_NATS_URL": nats_url,
            "MIM_STREAM_PREFIX": stream_prefix,
            "MIM_MINER_WORKERS": str(workers),
            "MIM_MINER_SHUTDOWN_GRACE_SECONDS": "2",
            **env,
        }
        proc = ServiceProcess(["-m", "services.miner"], env=settings).start()
        pool: list[int] = []
        started.append((proc, pool))
        proc.wait_for("service_ready", timeout=30)
        pool.extend(children(proc.pid))
        return proc

    yield start
    for proc, pool in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
        for pid in pool:  # they hold the miner's stdout: gone before the reader is closed
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.__exit__(None, None, None)
