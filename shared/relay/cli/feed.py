"""Sending objects to the node's ingest stream, ``WINDOW`` at a time: ``submit`` and ``import``.

Every object goes through :func:`relay.submit.submit`, exactly as the gateway and the syncer send
theirs, so the validators check it as any other. A full ingest stream is waited out (the
validators are draining it) for up to ``full_wait_seconds`` per object before the command gives
up; an object the bus refuses for good (over the server's payload limit, say) is named and the
rest go on. What each object became on the stream (its ingest sequence, and what it is, to follow
it until stored) is kept in :class:`Sent` when ``--wait`` needs it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from nats.js import JetStreamContext

from mim import canonical
from mim.entities import Address, entity_class
from mim.errors import MimError
from relay import BusError
from relay.bus import Layout
from relay.cli.running import Bar
from relay.submit import IngestFull, submit

__all__ = ["WINDOW", "Fed", "Sent", "feed", "identify"]

#: Publishes in flight at once.
WINDOW: Final = 64
_FIRST_PAUSE: Final = 0.2
_LONGEST_PAUSE: Final = 5.0


@dataclass(frozen=True, slots=True)
class Sent:
    """One object sent: where it was read, what it is, its ingest sequence; or, ``refused``,
    the stage and reason for which the gateway did not queue it."""

    where: str
    kind: str
    name: str  # the fingerprint, ``host:port`` for an address, "" if it does not decode
    last_update: int
    seq: int
    duplicate: bool
    address: tuple[str, str, int] | None = None  # location, sublocation, port
    refused: tuple[str, str] | None = None  # (stage, reason): not queued


@dataclass
class Fed:
    """What a feed did: objects queued and already queued, those the bus refused (where, why),
    those the gateway refused (each with ``Sent.refused``), and, when kept, each object sent."""

    queued: int = 0
    duplicates: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[Sent] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)


def identify(where: str, kind: str, body: bytes, seq: int, duplicate: bool) -> Sent:
    """What was sent, named as the validators will decode it (its fingerprint and last update,
    or where an address points); unnamed if it does not decode."""
    try:
        entity = canonical.loads(entity_class(kind), body)
    except MimError:
        return Sent(where, kind, "", 0, seq, duplicate)
    if isinstance(entity, Address):
        place = (entity.location, entity.sublocation, entity.port)
        name = f"{entity.location}:{entity.port}" + (f"/{entity.sublocation}" * bool(place[1]))
        return Sent(where, kind, name, 0, seq, duplicate, place)
    return Sent(where, kind, entity.fingerprint, entity.last_update, seq, duplicate)


async def feed(
    js: JetStreamContext,
    layout: Layout,
    items: Iterable[tuple[str, str, bytes]],
    *,
    source: str,
    full_wait_seconds: float,
    keep: bool,
    bar: Bar | None = None,
) -> Fed:
    """Send every ``(where, kind, body)`` of ``items``; ``keep`` the :class:`Sent` of each."""
    fed = Fed()
    window: list[tuple[str, str, bytes]] = []
    for item in items:
        window.append(item)
        if len(window) >= WINDOW:
            await _send(js, layout, window, fed, source, full_wait_seconds, keep)
            window = []
            if bar is not None:
                bar.update(WINDOW)
    await _send(js, layout, window, fed, source, full_wait_seconds, keep)
    if bar is not None:
        bar.update(len(window))
    return fed


async def _send(
    js: JetStreamContext,
    layout: Layout,
    window: list[tuple[str, str, bytes]],
    fed: Fed,
    source: str,
    full_wait_seconds: float,
    keep: bool,
) -> None:
    acks = await asyncio.gather(
        *(_one(js, layout, w, k, b, source, full_wait_seconds) for w, k, b in window)
    )
    for (where, kind, body), ack in zip(window, acks, strict=True):
        if isinstance(ack, str):
            fed.refused.append((where, ack))
            continue
        seq, duplicate = ack
        fed.duplicates += duplicate
        fed.queued += not duplicate
        if keep:
            fed.sent.append(identify(where, kind, body, seq, duplicate))


async def _one(
    js: JetStreamContext,
    layout: Layout,
    where: str,
    kind: str,
    body: bytes,
    source: str,
    full_wait_seconds: float,
) -> tuple[int, bool] | str:
    """``(ingest sequence, already queued)``, or why the bus refused the object for good."""
    deadline = time.monotonic() + full_wait_seconds
    pause = _FIRST_PAUSE
    while True:
        try:
            ack = await submit(js, layout, kind, body, source=source)
        except IngestFull as exc:
            if time.monotonic() + pause > deadline:
                raise IngestFull(
                    f"{where}: the ingest stream stayed full for {full_wait_seconds:g} s;"
                    " what came before was queued, send the rest again to finish"
                ) from exc
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)
            continue
        except BusError as exc:
            return f"the bus refused it: {exc}"
        return ack.seq, bool(ack.duplicate)
