"""A TCP link on loopback to a real server that a test can cut and mend.

A service pointed at :attr:`Link.port` reaches the server through it. :meth:`Link.cut` aborts
every connection and stops listening, so new ones are refused, as when the server's machine goes
away; :meth:`Link.mend` listens on the same port again. The link runs its own event loop in a
thread, so it keeps carrying bytes while the test blocks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["Link"]

_T = TypeVar("_T")
_CHUNK = 64 * 1024


class Link:
    """Bytes both ways between ``127.0.0.1:<port>`` and ``host:target_port``."""

    def __init__(self, host: str, target_port: int) -> None:
        self._target = (host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.port = 0

    def __enter__(self) -> Link:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def cut(self) -> None:
        """Abort every connection and refuse new ones."""
        self._call(self._close())

    def mend(self) -> None:
        """Accept connections on the same port again."""
        self._call(self._listen())

    def _call(self, work: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._carry, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _carry(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_reader, far_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, far_writer}
        self._open |= pair
        await asyncio.gather(_copy(reader, far_writer), _copy(far_reader, writer))
        self._open -= pair


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.transport.abort()
