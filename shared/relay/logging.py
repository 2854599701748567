"""Structured logs: one JSON object per line on stdout, for our code and for every library.

``configure(service, settings)`` is called once by the runner, before anything logs. After it:

- ``structlog.get_logger(__name__).info("object_accepted", fingerprint=fp)`` writes
  ``{"event": "object_accepted", "fingerprint": "...", "level": "info", "logger": "...",
  "service": "validator", "timestamp": "2025-01-01T00:00:00.000000Z"}``;
- records of the standard ``logging`` module (uvicorn, asyncpg, nats) go through the same
  processors and renderer, so they come out in the same shape with the record's logger name;
- values bound with ``structlog.contextvars.bound_contextvars(...)`` appear in every line logged
  inside the block, including lines logged by libraries.

``event`` is a snake_case fact and context goes in key/values, never into the event text. With
``log_format=auto`` the output is JSON unless stdout is a terminal, where it is coloured console
text. uvicorn must be started with ``log_config=None`` so that it keeps our handler.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from relay.settings import NodeSettings

__all__ = ["HANDLER_NAME", "configure", "get_logger", "reset"]

HANDLER_NAME = "mimrelay"

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name`` (shown as ``logger`` in each line)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial)
    return logger


def _service_adder(service: str) -> Processor:
    def add_service(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def _use_console(settings: NodeSettings, stream: TextIO) -> bool:
    if settings.log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty())
    return settings.log_format == "console"


def configure(service: str, settings: NodeSettings, *, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging through one renderer writing to ``stream`` (stdout).

    Calling it again replaces the previous configuration.
    """
    out = stream if stream is not None else sys.stdout
    console = _use_console(settings, out)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _service_adder(service),
    ]
    renderer: Processor
    final: list[Processor]
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=bool(getattr(out, "isatty", bool)()))
        final = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
    else:
        renderer = structlog.processors.JSONRenderer()
        final = [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # loggers are looked up per call so that tests (capture_logs) and a second configure()
        # take effect on module-level loggers too
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final)
    )
    root = logging.getLogger()
    _remove_handler(root)
    root.addHandler(handler)
    root.setLevel(_LEVELS[settings.log_level])
    logging.captureWarnings(True)


def _remove_handler(root: logging.Logger) -> None:
    for existing in list(root.handlers):
        if existing.get_name() == HANDLER_NAME:
            root.removeHandler(existing)
            existing.close()


def reset() -> None:
    """Undo ``configure``: remove our handler, reset structlog, clear bound context (tests)."""
    root = logging.getLogger()
    _remove_handler(root)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(False)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
