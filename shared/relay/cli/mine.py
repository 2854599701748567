"""``mimrelay mine --difficulty N TEXT``: one proof of work, from the miner service or in-process.

``TEXT`` is the exact PoW input (``-`` reads it from stdin). The result is one JSON line on stdout:
``{"pow": <unsigned PoW>, "difficulty", "attempts", "seconds", "rate", "where"}``; sign the PoW with
the owner's key to use it. While it runs, a progress line on stderr (when stderr is a terminal, or
with ``--progress``) shows attempts, rate, and the expected time of the whole search: each attempt
succeeds with probability 2^-N, so the expected time from any moment is 2^N / rate. The miners
are those of the node running in the data directory (``--data-dir``, ``MIM_DATA_DIR``), or of
``--nats-url`` / ``MIM_NATS_URL``; with none, the search runs in this process. ``where`` in the
result says which; ``-v`` logs why.

Exit codes: 0 a proof was printed, 1 no proof (refused, or the deadline passed), 2 a usage error.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import click

from relay.bus import Layout
from relay.cli.local import miners
from relay.cli.running import load_settings, node_options
from relay.mining import Mined, MiningError, connect, mine

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
    "--nats-url", help="Where the miner service listens [MIM_NATS_URL, else the running node's];"
    " an empty value mines in this process.",
)  # fmt: skip
@click.option(
    "--prefix", help="The node's stream prefix, for its miner subjects [MIM_STREAM_PREFIX, else"
    " the running node's].",
)  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, help="Give up after this many seconds.")  # fmt: skip
@click.option("--split/--no-split", default=True, show_default=True,
              help="Let every running miner search this proof at once.")  # fmt: skip
@click.option("--progress/--no-progress", default=None,
              help="Show the progress line (default: when stderr is a terminal).")  # fmt: skip
@node_options
@click.argument("text")
def mine_command(
    difficulty: int,
    nats_url: str | None,
    prefix: str | None,
    timeout: float,
    split: bool,
    progress: bool | None,
    data_dir: Path | None,
    verbose: int,
    text: str,
) -> None:
    """Find a proof of work of DIFFICULTY bits over TEXT (the exact PoW input; - for stdin)."""
    if text == "-":
        text = sys.stdin.read()
    settings = miners(load_settings(data_dir, verbose))
    if nats_url is not None:
        settings = settings.model_copy(update={"nats_url": nats_url})
    try:
        layout = Layout(prefix if prefix is not None else settings.stream_prefix)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--prefix") from None
    show = _Display(difficulty, sys.stderr.isatty() if progress is None else progress)
    started = time.monotonic()
    try:
        mined = asyncio.run(_run(settings.nats_url, layout, text, difficulty, timeout, split, show))
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
