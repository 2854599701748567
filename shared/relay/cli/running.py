"""What the commands share: exit codes, the one-line error, quiet logs, progress, async work.

Exit codes: 0 done; 1 the node refused or could not be reached (``REFUSED``); 2 a usage, file or
input error (``USAGE_ERROR``). An error is one ``error: ...`` line on stderr, never a traceback.

A command prints its result (stdout) and its errors (stderr), nothing else: logs are off unless
``-v`` (info) or ``-vv`` (debug) asks for them, on stderr. A progress bar goes to stderr when it
is a terminal and the work is long enough to watch (``--progress`` / ``--no-progress`` decide).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NoReturn, Self, TypeVar

import click

from relay import RelayError
from relay import logging as relay_logging
from relay.settings import NodeSettings, load

__all__ = [
    "PROGRESS_MIN",
    "REFUSED",
    "USAGE_ERROR",
    "Bar",
    "fail",
    "load_settings",
    "node_options",
    "progress_option",
    "run",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

REFUSED: Final = 1
USAGE_ERROR: Final = 2
#: Work shorter than this many objects goes by too fast to need a progress bar.
PROGRESS_MIN: Final = 200
_REDRAW_SECONDS: Final = 0.1
_LOG_LEVELS: Final = ("critical", "info", "debug")  # by the number of -v


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Say ``error: message`` on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def node_options(command: F) -> F:
    """``--data-dir`` (which node) and ``-v`` (logs) for a command that talks to the node."""
    command = click.option(
        "-v", "--verbose", count=True, help="Log what happens, on stderr (-vv: more)."
    )(command)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        help="The node's data directory, where `mimrelay up` keeps node.json"
        " [MIM_DATA_DIR, else ./data].",
    )(command)


def progress_option(command: F) -> F:
    """``--progress/--no-progress``: the bar on stderr; by default when stderr is a terminal."""
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Show a progress bar on stderr (default: on a terminal, for long work).",
    )(command)


def load_settings(data_dir: Path | None = None, verbose: int = 0) -> NodeSettings:
    """The node-wide settings from the environment (``data_dir`` wins over ``MIM_DATA_DIR``),
    with logs to stderr at the level ``verbose`` asks for (none by default)."""
    try:
        settings = load(NodeSettings, **({"data_dir": data_dir} if data_dir else {}))
    except RelayError as exc:
        fail(str(exc))
    level = _LOG_LEVELS[min(verbose, len(_LOG_LEVELS) - 1)]
    quiet = settings.model_copy(update={"log_level": level})
    relay_logging.configure("cli", quiet, stream=sys.stderr)
    return settings


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; the node refusing or not answering exits 1 with one line."""
    try:
        return asyncio.run(work)
    except RelayError as exc:
        fail(str(exc), REFUSED)
    except (OSError, TimeoutError) as exc:
        fail(f"cannot reach the node: {exc!r}", REFUSED)


class Bar:
    """A progress line on stderr, ``label [####------] done/total``, redrawn in place.

    ``show`` None: drawn when stderr is a terminal and ``total`` is at least ``PROGRESS_MIN``.
    """

    def __init__(self, total: int, label: str, show: bool | None, *, unit: str = "") -> None:
        self.total = max(total, 0)
        self.done = 0
        self.label = label
        self.unit = unit
        if show is None:
            show = sys.stderr.isatty() and total >= PROGRESS_MIN
        self.shown = show
        self._drawn = 0.0

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if self.shown and (now - self._drawn >= _REDRAW_SECONDS or self.done >= self.total):
            self._drawn = now
            filled = round(20 * self.done / self.total) if self.total else 20
            bar = "#" * min(filled, 20) + "-" * max(20 - filled, 0)
            count = f"{self.done}/{self.total}{self.unit}"
            click.echo(f"\r{self.label} [{bar}] {count} {note}".rstrip(), nl=False, err=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.shown and self._drawn:
            click.echo("", err=True)
