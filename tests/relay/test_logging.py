"""relay.logging: one JSON object per line for our events and for library records alike."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime
from typing import Any

import structlog
from structlog.contextvars import bound_contextvars

from relay import logging as relay_logging
from relay.settings import NodeSettings


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _configure(**settings: Any) -> io.StringIO:
    stream = io.StringIO()
    relay_logging.configure("validator", NodeSettings(**settings), stream=stream)
    return stream


def test_event_is_one_json_line_with_service_level_logger_and_time() -> None:
    """A structlog event comes out as one JSON object with the standard keys."""
    stream = _configure(log_format="json")
    relay_logging.get_logger("services.validator.worker").info("object_accepted", fingerprint="ab")
    (line,) = _lines(stream)
    assert line["event"] == "object_accepted"
    assert line["fingerprint"] == "ab"
    assert line["level"] == "info"
    assert line["service"] == "validator"
    assert line["logger"] == "services.validator.worker"
    assert datetime.fromisoformat(line["timestamp"]).utcoffset() is not None


def test_stdlib_records_use_the_same_renderer() -> None:
    """A library's logging record (asyncpg, nats, uvicorn) is a JSON line in the same shape."""
    stream = _configure(log_format="json")
    logging.getLogger("nats.aio.client").warning("reconnecting to %s", "nats://x:4222")
    (line,) = _lines(stream)
    assert line["event"] == "reconnecting to nats://x:4222"
    assert line["level"] == "warning"
    assert line["logger"] == "nats.aio.client"
    assert line["service"] == "validator"
    assert "timestamp" in line


def test_bound_context_reaches_every_line_in_the_block() -> None:
    """Values bound around a handler are on our lines and library lines inside it, not after."""
    stream = _configure(log_format="json")
    log = relay_logging.get_logger("t")
    with bound_contextvars(fingerprint="f00", entity="post"):
        log.info("check_started")
        logging.getLogger("asyncpg").warning("slow query")
    log.info("idle")
    first, second, third = _lines(stream)
    assert (first["fingerprint"], first["entity"]) == ("f00", "post")
    assert second["fingerprint"] == "f00"
    assert "fingerprint" not in third


def test_level_filters_and_exceptions_are_rendered() -> None:
    """Lines under the level are dropped; an exception is rendered into the JSON line."""
    stream = _configure(log_format="json", log_level="WARNING")
    log = relay_logging.get_logger("t")
    log.info("not_shown")
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("handler_failed")
    (line,) = _lines(stream)
    assert line["event"] == "handler_failed"
    assert line["level"] == "error"
    assert "ValueError: bad" in line["exception"]


def test_console_format_is_text() -> None:
    """log_format=console writes human-readable text, not JSON."""
    stream = _configure(log_format="console")
    relay_logging.get_logger("t").info("service_started", port=1)
    text = stream.getvalue()
    assert "service_started" in text
    assert "port" in text
    assert not text.lstrip().startswith("{")


def test_auto_is_json_when_not_a_terminal() -> None:
    """auto picks JSON for a pipe or file (a StringIO is not a terminal)."""
    stream = _configure(log_format="auto")
    relay_logging.get_logger("t").info("x")
    assert _lines(stream)[0]["event"] == "x"


def test_configure_twice_keeps_one_handler() -> None:
    """A second configure replaces the first: each event is written once."""
    _configure(log_format="json")
    stream = _configure(log_format="json")
    relay_logging.get_logger("t").info("once")
    assert len(_lines(stream)) == 1
    handlers = [h for h in logging.getLogger().handlers if h.get_name() == "mimrelay"]
    assert len(handlers) == 1


def test_capture_logs_sees_events_after_configure() -> None:
    """Tests can assert on events with structlog's capture_logs after configure()."""
    _configure(log_format="json")
    log = relay_logging.get_logger("t")
    with structlog.testing.capture_logs() as captured:
        log.info("object_rejected", stage="pow")
    assert captured == [{"event": "object_rejected", "stage": "pow", "log_level": "info"}]
