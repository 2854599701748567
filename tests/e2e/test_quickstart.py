"""docs/quickstart.md, run as written: every `sh` block in order, in a fresh folder with no `MIM_*`
variable, against real nodes, each block printing what the page shows after it.

Blocks run in one shell session, as typed into one terminal (variables carry from block to block);
a `sh background` block is a terminal of its own (a node), stopped with Ctrl-C (SIGINT to its
process group) at the end, which must exit 0; a `sh repeat` block runs again until it prints what
is shown. A block whose output shows an `error:` or `rejected` line must exit 1, any other 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

import pytest

from tests.helpers.docs import Step, prints, shows, steps
from tests.helpers.procs import REPO

PAGE: Final = REPO / "docs" / "quickstart.md"
#: How long a step may take: the proofs of work of a create, a node starting, a sync.
STEP_SECONDS: Final = 180.0
_POLL_SECONDS: Final = 0.2


class Session:
    """One bash reading blocks like a terminal: each block is sourced, its output and exit
    status written to files of ``scratch``."""

    def __init__(self, folder: Path, scratch: Path, env: dict[str, str]) -> None:
        self.scratch = scratch
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile"], cwd=folder, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.count = 0

    def run(self, code: str) -> tuple[int, str]:
        self.count += 1
        script, out, status = (self.scratch / f"{self.count}.{x}" for x in ("sh", "out", "rc"))
        script.write_text(code, encoding="utf-8")
        done = status.with_suffix(".done")
        stdin: IO[str] | None = self.proc.stdin
        assert stdin is not None
        stdin.write(f"source {script} > {out} 2>&1 < /dev/null; echo $? > {status}; touch {done}\n")
        stdin.flush()
        deadline = time.monotonic() + STEP_SECONDS
        while not done.exists():
            assert self.proc.poll() is None, "the shell exited"
            assert time.monotonic() < deadline, f"no end after {STEP_SECONDS:g} s:\n{code}"
            time.sleep(_POLL_SECONDS)
        return int(status.read_text()), out.read_text(encoding="utf-8", errors="replace")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)


class Terminal:
    """A block run in a terminal of its own, its output in ``log``."""

    def __init__(self, step: Step, folder: Path, log: Path, env: dict[str, str]) -> None:
        self.step = step
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["bash", "--norc", "--noprofile", "-c", step.code], cwd=folder, env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_shown(self) -> None:
        deadline = time.monotonic() + STEP_SECONDS
        while not shows(self.step.expected, self.output()):
            assert self.proc.poll() is None, f"line {self.step.line} exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"line {self.step.line}:\n{self.output()[-3000:]}"
            time.sleep(_POLL_SECONDS)

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the terminal's process group; the exit status."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()


def _environment() -> dict[str, str]:
    """This environment without any ``MIM_*`` variable, ``mimrelay`` first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    """The background terminals a test opens; any still running at the end is killed."""
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        if terminal.proc.poll() is None:
            os.killpg(terminal.proc.pid, signal.SIGKILL)
            terminal.proc.wait()


def _expected_status(step: Step) -> int:
    lines = step.expected.splitlines()
    return 1 if any(line.startswith(("error:", "rejected")) for line in lines) else 0


def _run(session: Session, step: Step) -> None:
    deadline = time.monotonic() + STEP_SECONDS
    while True:
        status, output = session.run(step.code)
        if prints(step.expected, output) or step.mode != "repeat":
            break
        assert time.monotonic() < deadline, f"line {step.line} still prints:\n{output}"
        time.sleep(1.0)
    assert prints(step.expected, output), (
        f"line {step.line}:\n{step.code}\nprinted:\n{output}\nexpected:\n{step.expected}"
    )
    assert status == _expected_status(step), f"line {step.line} exited {status}:\n{output}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_quickstart_runs_as_written(tmp_path: Path, terminals: list[Terminal]) -> None:
    """Every block of the quickstart prints what the page shows, from no node to two nodes that
    share a forum, and each node stops cleanly on Ctrl-C."""
    assert shutil.which("curl"), "the quickstart uses curl"
    folder, scratch = tmp_path / "quickstart", tmp_path / "steps"
    folder.mkdir()
    scratch.mkdir()
    env = _environment()
    session = Session(folder, scratch, env)
    try:
        for step in steps(PAGE):
            if step.mode == "background":
                log = scratch / f"terminal-{len(terminals) + 1}.log"
                terminals.append(Terminal(step, folder, log, env))
                terminals[-1].wait_shown()
            else:
                _run(session, step)
    finally:
        session.close()
    statuses = [t.interrupt() for t in reversed(terminals)]
    assert statuses == [0] * len(terminals), [t.output()[-2000:] for t in terminals]


def test_each_block_is_checked_line_for_line() -> None:
    """The page's blocks are all found, and the check refuses an extra line (a stray log line),
    a changed line, and a block that printed nothing where output is shown."""
    found = steps(PAGE)
    assert [s.mode for s in found].count("background") == 2
    submit = next(s for s in found if s.code.startswith("mimrelay submit --wait"))
    printed = "\n".join(
        [*(f"stored    {k:<11} {'a' * 64}" for k in ("key", "board", "thread", "post")),
         "4 stored, 0 rejected"]
    )  # fmt: skip
    assert prints(submit.expected, printed)
    assert not prints(submit.expected, printed + "\nnats_disconnected")
    assert not prints(submit.expected, printed.replace("4 stored", "3 stored"))
    assert not prints(submit.expected, "")
    assert prints("", "")
