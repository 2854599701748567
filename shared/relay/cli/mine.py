"""``mimrelay mine --difficulty N TEXT``: one proof of work, from the miner service or in-process.

``TEXT`` is the exact PoW input (``-`` reads it from stdin). The result is one JSON line on stdout:
``{"pow": <unsigned PoW>, "difficulty", "attempts", "seconds", "rate", "where"}``; sign the PoW with
the owner's key to use it. While it runs, a progress line on stderr (when stderr is a terminal, or
with ``--progress``) shows attempts, rate, and the expected time of the whole search: each attempt
succeeds with probability 2^-N, so the expected time from any moment is 2^N / rate. Which way the
proof was made (service or in-process, and why) is logged on stderr.

Exit codes: 0 a proof was printed, 1 no proof (refused, or the deadline passed), 2 a usage error.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time

import click

from relay import SettingsError
from relay import logging as relay_logging
from relay.bus import Layout
from relay.mining import Mined, MiningError, connect, mine
from relay.settings import NodeSettings, load

_FAILED = 1
_EVERY_SECONDS = 0.5  # progress line refresh


class _Display:
    """The progress line: attempts, rate and expected time, redrawn in place on stderr."""

    def __init__(self, difficulty: int, enabled: bool) -> None:
        self._expected = 2.0**difficulty
        self._enabled = enabled
        self._lock = threading.Lock()  # the in-process search reports from its thread
        self._last = 0.0
        self._shown = False

    def __call__(self, attempts: int, seconds: float) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._last < _EVERY_SECONDS or seconds <= 0:
            return
        with self._lock:
            self._last = now
            rate = attempts / seconds
            expected = self._expected / rate if rate else float("inf")
            line = (
                f"\r{attempts:,} attempts  {rate:,.0f}/s  "
                f"elapsed {seconds:.1f} s  expected {expected:.1f} s per proof"
            )
            click.echo(line, err=True, nl=False)
            self._shown = True

    def close(self) -> None:
        if self._shown:
            click.echo("", err=True)


async def _run(
    url: str,
    layout: Layout,
    text: str,
    difficulty: int,
    timeout: float,  # noqa: ASYNC109 (passed on to mine)
    split: bool,
    show: _Display,
) -> Mined:
    nc = await connect(url) if url else None
    try:
        return await mine(
            nc, text, difficulty, timeout=timeout, split=split, layout=layout, progress=show
        )
    finally:
        if nc is not None:
            await nc.close()


@click.command()
@click.option("--difficulty", "-d", type=click.IntRange(1, 256), required=True, help="Zero bits.")
@click.option(
    "--nats-url", envvar="MIM_NATS_URL", default="nats://127.0.0.1:4222", show_default=True,
    help="Where the miner service listens; an empty value mines in this process.",
)  # fmt: skip
@click.option(
    "--prefix", envvar="MIM_STREAM_PREFIX", default="MIM", show_default=True,
    help="The node's stream prefix (its miner subjects).",
)  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, help="Give up after this many seconds.")  # fmt: skip
@click.option("--split/--no-split", default=True, show_default=True,
              help="Let every running miner search this proof at once.")  # fmt: skip
@click.option("--progress/--no-progress", default=None,
              help="Show the progress line (default: when stderr is a terminal).")  # fmt: skip
@click.argument("text")
def mine_command(
    difficulty: int,
    nats_url: str,
    prefix: str,
    timeout: float,
    split: bool,
    progress: bool | None,
    text: str,
) -> None:
    """Find a proof of work of DIFFICULTY bits over TEXT (the exact PoW input; - for stdin)."""
    if text == "-":
        text = sys.stdin.read()
    try:
        layout = Layout(prefix)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--prefix") from None
    try:
        settings = load(NodeSettings)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    relay_logging.configure("cli", settings, stream=sys.stderr)
    show = _Display(difficulty, sys.stderr.isatty() if progress is None else progress)
    started = time.monotonic()
    try:
        mined = asyncio.run(_run(nats_url, layout, text, difficulty, timeout, split, show))
    except MiningError as exc:
        show.close()
        click.echo(f"error: {exc}", err=True)
        sys.exit(_FAILED)
    show.close()
    seconds = time.monotonic() - started
    result = {
        "pow": mined.unsigned_pow,
        "difficulty": difficulty,
        "attempts": mined.attempts,
        "seconds": round(seconds, 3),
        "rate": round(mined.attempts / seconds) if seconds > 0 else 0,
        "where": mined.where,
    }
    click.echo(json.dumps(result))
