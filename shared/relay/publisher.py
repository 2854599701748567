"""Publishing many messages to JetStream at once, each still confirmed before anyone relies on it.

``js.publish`` sends one message and waits for its acknowledgement: one future, one timer and one
random token per message, and a round trip each unless callers overlap them. A stage that moves
whole batches (the validator, bulk submission) needs the acknowledgements of a batch, not one at a
time. :class:`Publisher` sends every message of a batch with a reply subject under one inbox it
subscribes to once, matches each acknowledgement to its message by a counter token, and returns
when all have answered or the timeout has passed. The caller gets, per message, either a
:class:`Confirmed` (stored, or dropped by JetStream as a duplicate of one stored earlier) or the
error that says why not (:class:`relay.StreamFull`, :class:`relay.BusUnavailable`,
:class:`relay.BusError`), exactly what :func:`relay.bus.publish` raises for one message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from relay import BusError, BusUnavailable, RelayError
from relay.bus import refusal

__all__ = ["Confirmed", "Outgoing", "Publisher"]

#: The status header JetStream's reply carries when no stream listens on the subject.
_NO_RESPONDERS: Final = "503"


@dataclass(frozen=True, slots=True)
class Confirmed:
    """JetStream's acknowledgement of one message."""

    stream: str
    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish."""

    subject: str
    payload: bytes
    headers: Mapping[str, str] | None = None


class _Batch:
    __slots__ = ("done", "left", "results", "subjects")

    def __init__(self, subjects: list[str]) -> None:
        self.subjects = subjects
        self.results: list[Confirmed | RelayError | None] = [None] * len(subjects)
        self.left = len(subjects)
        self.done = asyncio.get_running_loop().create_future()

    def settle(self, index: int, result: Confirmed | RelayError) -> None:
        if self.results[index] is not None:
            return
        self.results[index] = result
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)


class Publisher:
    """Pipelined JetStream publishes on ``nc``; call :meth:`start` once, then :meth:`publish`."""

    def __init__(self, nc: NATS, *, timeout: float = 5.0) -> None:
        self._nc = nc
        self._timeout = timeout
        self._prefix = f"{nc.new_inbox()}."
        self._tokens = itertools.count()
        self._waiting: dict[str, tuple[_Batch, int]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> Publisher:
        """Subscribe to the reply inbox; idempotent."""
        if self._sub is None:
            self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)
        return self

    async def close(self) -> None:
        """Stop listening for acknowledgements; publishes still waiting time out."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):  # the connection is closing anyway
                await sub.unsubscribe()

    async def publish(self, messages: Sequence[Outgoing]) -> list[Confirmed | RelayError]:
        """Publish ``messages`` and wait (up to the timeout) for every acknowledgement.

        Never raises for one message's failure: its slot holds the error instead. A message that
        got no answer in time holds ``BusUnavailable``; a later answer for it is ignored.
        """
        if not messages:
            return []
        await self.start()
        batch = _Batch([m.subject for m in messages])
        tokens: list[str] = []
        try:
            for index, message in enumerate(messages):
                token = str(next(self._tokens))
                self._waiting[token] = (batch, index)
                tokens.append(token)
                try:
                    await self._nc.publish(
                        message.subject,
                        message.payload,
                        reply=self._prefix + token,
                        headers=dict(message.headers) if message.headers else None,
                    )
                except nats.errors.MaxPayloadError:
                    batch.settle(index, BusError(f"{message.subject}: {len(message.payload)} bytes"
                                                 " is over the server's max payload"))  # fmt: skip
                except nats.errors.Error as exc:
                    batch.settle(index, BusUnavailable(f"{message.subject}: {exc!r}"))
            if batch.left:
                try:
                    await asyncio.wait_for(asyncio.shield(batch.done), self._timeout)
                except TimeoutError:
                    late = f"no acknowledgement within {self._timeout:g}s"
                    for index, subject in enumerate(batch.subjects):
                        batch.settle(index, BusUnavailable(f"{subject}: {late}"))
        finally:
            for token in tokens:
                self._waiting.pop(token, None)
        return [r for r in batch.results if r is not None]

    async def _on_reply(self, msg: Msg) -> None:
        entry = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if entry is None:
            return  # late, after its batch gave up
        batch, index = entry
        batch.settle(index, _result(batch.subjects[index], msg))


def _result(subject: str, msg: Msg) -> Confirmed | RelayError:
    if msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
        return BusUnavailable(f"{subject}: no stream answered")
    try:
        answer = json.loads(msg.data)
    except ValueError:
        return BusError(f"{subject}: unreadable acknowledgement {msg.data[:80]!r}")
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        return refusal(subject, int(error.get("err_code") or 0), str(error.get("description", "")),
                       int(error.get("code") or 0))  # fmt: skip
    if not isinstance(answer, dict) or "seq" not in answer:
        return BusError(f"{subject}: unexpected acknowledgement {msg.data[:80]!r}")
    return Confirmed(
        str(answer.get("stream", "")), int(answer["seq"]), bool(answer.get("duplicate"))
    )
