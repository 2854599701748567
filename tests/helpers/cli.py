"""Running ``mimrelay`` commands in a test."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner, Result

from relay.cli import main


async def invoke(args: list[str], env: dict[str, str]) -> Result:
    """Run the command in a thread: it starts its own event loop, as from a shell."""
    return await asyncio.to_thread(CliRunner().invoke, main, args, env=env)
