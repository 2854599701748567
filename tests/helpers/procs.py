"""Services run as real subprocesses, with their JSON log lines collected as they come.

with ServiceProcess(["-m", "services.validator"], env={"MIM_NATS_URL": url}) as proc:
    proc.wait_for("service_ready")
    proc.terminate()
    assert proc.wait() == 0
    assert proc.last("shutdown_complete")["cancelled"] == 0
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

REPO = Path(__file__).resolve().parents[2]


def parse_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects among ``text``'s lines (other lines are skipped)."""
    records = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie, exited but not yet reaped by
    its parent, is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes, other than this one, that mention ``text`` (say, a
    node's data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and alive(int(entry.name)):
            found.append(f"{entry.name}: {cmdline}")
    return found


class ServiceProcess:
    """``python <args>`` in the repository root, stdout parsed as JSON lines by a reader thread."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.args = list(args)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "MIM_LOG_FORMAT": "json", **(env or {})}
        self.records: list[dict[str, Any]] = []
        self.stderr = ""
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []

    @property
    def proc(self) -> subprocess.Popen[str]:
        assert self._proc is not None, "not started"
        return self._proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> Self:
        self._proc = subprocess.Popen(
            [sys.executable, *self.args],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            for record in parse_lines(line):
                self.records.append(record)
                self._queue.put(record)
        self._queue.put(None)

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self.stderr += line

    def wait_for(self, event: str, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        """The first record (logged before or after now) with ``event`` and ``fields``."""
        deadline = time.monotonic() + timeout
        finished = False
        while True:
            for record in list(self.records):
                if record.get("event") == event and all(
                    record.get(k) == v for k, v in fields.items()
                ):
                    return record
            remaining = deadline - time.monotonic()
            if finished or remaining <= 0:
                break
            try:
                finished = self._queue.get(timeout=min(0.2, remaining)) is None
            except queue.Empty:
                continue
        raise AssertionError(
            f"no {event!r} line within {timeout}s; exit status {self.proc.poll()}\n"
            f"last records: {self.records[-20:]}\nstderr: {self.stderr[-2000:]}"
        )

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == event]

    def last(self, event: str) -> dict[str, Any]:
        found = self.events(event)
        assert found, f"no {event!r} line; records: {self.records[-20:]}"
        return found[-1]

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def terminate(self) -> None:
        self.send(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(5)
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._proc is not None:
            self.wait()
            for stream in (self._proc.stdout, self._proc.stderr):
                if stream is not None:
                    stream.close()


async def export_static(database_url: str, out: Path) -> None:
    """``mimrelay export-static OUT`` over ``database_url``; fails the test if it fails."""
    env = {**os.environ, "MIM_DATABASE_URL": database_url, "MIM_CONNECT_ATTEMPTS": "3"}
    export = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.cli", "export-static", str(out),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(export.communicate(), 60)
    assert export.returncode == 0, stderr.decode()
