"""The connection layer: what a client may hold of the gateway before a request reaches the app.

uvicorn's ``httptools`` protocol reads any header of any size and keeps a connection that sends
nothing open for ever. :func:`protocol` makes the protocol class the gateway serves with instead,
which adds, per connection (each bound a setting, :class:`HttpLimits`):

- at most ``max_connections`` open at once: one more is answered 503 and closed;
- a connection that sends nothing for ``idle_timeout`` (fresh, or between requests) is closed;
- the request line and headers must arrive within ``header_timeout`` of their first byte (408);
- they may take ``max_header_bytes`` in all (431), ``max_headers`` header lines (431), and a URL
  of ``max_url_bytes`` (414); bytes past the limit are never handed to the parser;
- a client that stops reading our answer for ``write_timeout`` is cut off;
- the rest of a body we answered without reading (a 413) is read and dropped for at most
  ``idle_timeout``, so the client can read our answer, then the connection is closed.

Answers leave corked (:class:`_Corked`): uvicorn writes a response's status line and headers, then
its body, as two writes; with Nagle off each would be a syscall and a segment of its own. A short
write is held until the next one and both go out in one ``writelines`` (a single ``writev``), or
at the end of the loop iteration if nothing follows, as ``TCP_CORK`` would do. Cached GETs, whose
head and body are written back to back, gain about a fifth of their rate.

Every refusal is a JSON body in the usual ``{"error": {...}}`` shape with ``Connection: close``,
counted in ``mim_gateway_connection_limits_total`` by rule; open connections are the gauge
``mim_gateway_connections``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, cast

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from services.gateway import metrics

__all__ = ["HttpLimits", "protocol"]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The bounds of one listener's connections."""

    max_connections: int = 1000
    max_header_bytes: int = 16384
    max_headers: int = 64
    max_url_bytes: int = 4096
    header_timeout: float = 10.0
    idle_timeout: float = 15.0
    write_timeout: float = 30.0


_CORK_BYTES = 4096  # a write this short (a head) waits for the next one


class _Corked:
    """The transport as a request's cycle sees it; see the module docstring. Every other use of
    the transport reaches the real one, after what is held has been written."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))
        elif len(data) <= _CORK_BYTES and not self._transport.is_closing():
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write what is held now."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        self.flush()
        return getattr(self._transport, name)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request we refused."""


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol held to :class:`HttpLimits` (``limits`` set by
    :func:`protocol`)."""

    limits: HttpLimits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._begun = False
        self._header_lines = 0
        self._pending: tuple[int, str, str, str] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._corked: _Corked | None = None

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._corked = _Corked(self.transport, self.loop)
        metrics.CONNECTIONS.set(len(self.connections))
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "connection", "http.connections", "too many connections")
            return
        self._idle = self.loop.call_later(self.limits.idle_timeout, self._on_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._idle, self._head_timer, self._write_timer, self._linger):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)
        metrics.CONNECTIONS.set(len(self.connections))

    def _uncork(self) -> None:
        if self._corked is not None:
            self._corked.flush()

    def shutdown(self) -> None:
        self._uncork()
        super().shutdown()

    def _on_idle(self) -> None:
        if not self.transport.is_closing():
            metrics.CONNECTION_LIMITS.labels("http.idle").inc()
            self.transport.close()

    def _on_head_timeout(self) -> None:
        if self._begun and not self.transport.is_closing():
            reason = f"headers not received within {self.limits.header_timeout:g} s"
            self._refuse(408, "request", "http.header_timeout", reason)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.write_timeout, self._on_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _on_stalled(self) -> None:
        metrics.CONNECTION_LIMITS.labels("http.write_timeout").inc()
        self.transport.abort()

    def _refuse(self, status: int, field: str, rule: str, reason: str) -> None:
        """Answer ``status`` in our error shape, close, and count ``rule``."""
        metrics.CONNECTION_LIMITS.labels(rule).inc()
        error = {"error": {"field": field, "rule": rule, "reason": reason}}
        body = json.dumps(error, separators=(",", ":")).encode()
        head = b"".join(
            [
                STATUS_LINE[status],
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n\r\n",
            ]
        )
        self._in_head = False
        self._uncork()
        if not self.transport.is_closing():
            self.transport.write(head + body)
            self.transport.close()

    # ------------------------------------------------------------------ bytes in

    def data_received(self, data: bytes) -> None:
        self._receive(data)
        if self._begun and self._head_timer is None and not self.transport.is_closing():
            # a request whose head did not come whole: it has header_timeout to finish
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout, self._on_head_timeout
            )

    def _receive(self, data: bytes) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if cast(object, self.parser) is None or self.transport.is_closing():
            return  # lost, or refused: nothing more is read
        if not self._in_head:
            self._feed(data)
            return
        room = self.limits.max_header_bytes - self._head_bytes
        self._head_bytes += min(room, len(data))
        self._feed(data[:room])
        if len(data) <= room or self.transport.is_closing():
            return
        if self._heading():
            reason = f"request line and headers over {self.limits.max_header_bytes} bytes"
            self._refuse(431, "headers", "http.header_size", reason)
            return
        self._receive(data[room:])  # the rest of a body, or a request after this one

    def _heading(self) -> bool:
        """Whether the request line and headers are still being read (the parser may have just
        finished them)."""
        return self._in_head

    def _feed(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Refused):
                self._refuse(400, "request", "http.parse", "invalid HTTP request")
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            self._refuse(400, "request", "http.parse", "invalid HTTP request")

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._header_lines, self._pending = True, 0, None
        self._begun = True  # timed from here if the head does not come whole (data_received)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_url_bytes and self._pending is None:
            reason = f"URL over {self.limits.max_url_bytes} bytes"
            self._pending = (414, "url", "http.url_size", reason)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines += 1
        if self._header_lines > self.limits.max_headers:
            if self._pending is None:
                reason = f"over {self.limits.max_headers} header lines"
                self._pending = (431, "headers", "http.header_count", reason)
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = self._begun = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._pending is not None:
            self._refuse(*self._pending)
            raise _Refused
        real = self.transport
        if self._corked is not None:  # the cycle made here writes through it
            self.transport = cast(asyncio.Transport, self._corked)
        try:
            super().on_headers_complete()
        finally:
            self.transport = real

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0
        self._in_head = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._in_head and self._linger is None and not self.transport.is_closing():
            # answered before its body ended: drop the rest, but not for ever
            self._linger = self.loop.call_later(self.limits.idle_timeout, self._on_linger)

    def _on_linger(self) -> None:
        self._uncork()
        if not self.transport.is_closing():
            metrics.CONNECTION_LIMITS.labels("http.body_linger").inc()
            self.transport.close()


def protocol(limits: HttpLimits) -> type[asyncio.Protocol]:
    """The protocol class uvicorn serves one listener with, held to ``limits``."""
    return type("GuardedHttp", (GuardedHttp,), {"limits": limits})
