"""What the node commands share: exit codes, the one-line error, settings, and running async work.

Exit codes: 0 done; 1 the node refused or could not be reached (``REFUSED``); 2 a usage, file or
input error (``USAGE_ERROR``). An error is one ``error: ...`` line on stderr, never a traceback.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, Final, NoReturn, TypeVar

import click

from relay import RelayError
from relay import logging as relay_logging
from relay.settings import NodeSettings, load

__all__ = ["REFUSED", "USAGE_ERROR", "fail", "node_settings", "run"]

T = TypeVar("T")

REFUSED: Final = 1
USAGE_ERROR: Final = 2


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    """Say ``error: message`` on stderr and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def node_settings() -> NodeSettings:
    """The node's settings from the environment; library log lines (warnings only) to stderr.

    stdout is the command's answer, so nothing else is written there.
    """
    try:
        loaded = load(NodeSettings)
    except RelayError as exc:
        fail(str(exc))
    quiet = loaded.model_copy(update={"log_level": "warning"})
    relay_logging.configure("cli", quiet, stream=sys.stderr)
    return loaded


def run(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; the node refusing or not answering exits 1 with one line."""
    try:
        return asyncio.run(work)
    except RelayError as exc:
        fail(str(exc), REFUSED)
    except (OSError, TimeoutError) as exc:
        fail(f"cannot reach the node: {exc!r}", REFUSED)
