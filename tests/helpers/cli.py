"""Running ``mimrelay`` commands in a test: in-process, or as a process as from a shell."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Mapping

from click.testing import CliRunner, Result

from relay.cli import main
from tests.helpers.procs import REPO


async def invoke(args: list[str], env: dict[str, str]) -> Result:
    """Run the command in a thread: it starts its own event loop, as from a shell."""
    return await asyncio.to_thread(CliRunner().invoke, main, args, env=env)


def run_cli(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``mimrelay ARGS`` as a process, this environment plus ``env``; its text output."""
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
