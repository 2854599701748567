"""A pull consumer that keeps messages coming, for stages that work through a stream in batches.

``PullSubscription.fetch`` asks for one batch and waits on every message of it with its own
timer, and asks again only when called again, so a stage alternates between working and
waiting for its next batch. :class:`Puller` keeps pull requests outstanding on the durable
consumer so that about ``batch * 2`` messages are always on their way or in hand, receives them on
one inbox with one callback, and hands out what has arrived: :meth:`take` returns as soon as
anything is there, up to the number asked for.

Pull requests are served by JetStream in the order they were made, each until it has delivered
its ``batch`` or expired (the server then says how many it still owed, in a status message), so
the puller tracks them in a queue. Requests die with the connection, so after a reconnect they
are all forgotten and replaced; a request that neither finished nor expired within its time plus
a grace (its answer was lost some other way) is forgotten and replaced too.

Messages in hand are not acknowledged by the puller: the stage acks or naks each as before, and
:meth:`close` naks what was never handed out, so it is redelivered at once instead of after the
consumer's ack wait.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from typing import Final

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["Puller"]

_log = structlog.stdlib.get_logger("relay.puller")

#: How long one pull request waits on the server for messages before it expires.
REQUEST_SECONDS: Final = 5.0
#: How long after its expiry a request with no word from the server is taken as lost.
LOST_GRACE_SECONDS: Final = 2.0
_STATUS: Final = "Status"
#: After the server refuses a pull request (consumer gone, too many waiting), pause this long.
REFUSED_PAUSE_SECONDS: Final = 1.0
_HEARTBEAT: Final = "100"


class _Request:
    __slots__ = ("deadline", "owed")

    def __init__(self, owed: int, deadline: float) -> None:
        self.owed = owed
        self.deadline = deadline


class Puller:
    """Keep ``batch * 2`` messages of ``stream``'s durable consumer ``durable`` on their way."""

    def __init__(self, nc: NATS, stream: str, durable: str, *, batch: int) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._batch = batch
        self._want = 2 * batch
        self._ready: collections.deque[Msg] = collections.deque()
        self._requests: collections.deque[_Request] = collections.deque()
        self._arrived = asyncio.Event()
        self._sub: Subscription | None = None
        self._pause_until = 0.0
        self._reconnects = nc.stats["reconnects"]

    async def start(self) -> Puller:
        """Listen on the inbox; idempotent."""
        if self._sub is None:
            self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        return self

    async def take(self, most: int, wait_seconds: float) -> list[Msg]:
        """Up to ``most`` messages, as soon as any are here; [] after ``wait_seconds`` of none."""
        await self.start()
        await self._top_up()
        if not self._ready:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wait_seconds)
        taken = [self._ready.popleft() for _ in range(min(most, len(self._ready)))]
        await self._top_up()
        return taken

    async def close(self) -> None:
        """Stop receiving; messages never handed out are given back for redelivery."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        left, self._ready = list(self._ready), collections.deque()
        for msg in left:
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()

    # ------------------------------------------------------------------ requests

    def _owed(self) -> int:
        if self._nc.stats["reconnects"] != self._reconnects:
            self._reconnects = self._nc.stats["reconnects"]
            self._requests.clear()  # the server forgot them with the old connection
        now = time.monotonic()
        while self._requests and self._requests[0].deadline + LOST_GRACE_SECONDS < now:
            self._requests.popleft()  # no answer and no expiry notice: lost with a reconnect
        return sum(r.owed for r in self._requests)

    async def _top_up(self) -> None:
        if len(self._ready) + self._owed() > self._want - self._batch:
            return
        if self._sub is None or time.monotonic() < self._pause_until:
            return
        request = json.dumps({"batch": self._batch, "expires": int(REQUEST_SECONDS * 1e9)})
        try:
            await self._nc.publish(self._next_subject, request.encode(), reply=self._inbox)
        except nats.errors.Error as exc:
            _log.warning("pull_request_failed", error=repr(exc))
            return
        self._requests.append(_Request(self._batch, time.monotonic() + REQUEST_SECONDS))

    async def _on_msg(self, msg: Msg) -> None:
        status = msg.headers.get(_STATUS) if msg.headers else None
        if status is None:
            self._ready.append(msg)
            self._arrived.set()
            if self._requests:
                head = self._requests[0]
                head.owed -= 1
                if head.owed <= 0:
                    self._requests.popleft()
            return
        if status == _HEARTBEAT:
            return
        # 408 (expired) and 409 (refused: consumer gone, too many waiting...) end the oldest
        # request, whatever it still owed
        if self._requests:
            self._requests.popleft()
        if status != "408":
            self._pause_until = time.monotonic() + REFUSED_PAUSE_SECONDS
            _log.warning("pull_request_refused", status=status,
                         description=(msg.headers or {}).get("Description", ""))  # fmt: skip
        await self._top_up()
