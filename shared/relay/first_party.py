"""First-party addresses: what a node says of itself, sent to the store (PROTOCOL.md §13.6).

When a remote answers our ping or sync, or sends us a request, what it says of itself is recorded
at the place we reached it, with the times we last pinged and synced it. :func:`report` sends the
address in through the ingest stream like every other object, marked ``Mim-Source: first-party``
with the times in headers (``Mim-Last-Ping``, ``Mim-Last-Sync``); a validator checks it and passes
the marks on to the accepted stream, and the store (the one writer of ``addresses``) applies them.
The same report (same address, same times) within the dedupe window is queued once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from nats.js import JetStreamContext

from mim import canonical
from mim.entities import Address
from relay import bus
from relay.bus import Layout, headers, publish
from relay.submit import dedupe_id

__all__ = ["FIRST_PARTY", "Reporter", "Sighting", "marks", "report", "sighting"]

#: ``Mim-Source`` value of an address heard from the node itself.
FIRST_PARTY: Final = "first-party"


@dataclass(frozen=True, slots=True)
class Sighting:
    """The times a first-party report carries: last ping and last sync (0: not this time)."""

    last_ping: int = 0
    last_sync: int = 0


def _time(values: Mapping[str, str], name: str) -> int:
    value = values.get(name, "")
    return int(value) if value.isdigit() else 0


def sighting(values: Mapping[str, str] | None) -> Sighting | None:
    """The sighting in a message's headers, or None if it is not a first-party report."""
    if values is None or values.get(bus.HEADER_SOURCE) != FIRST_PARTY:
        return None
    return Sighting(_time(values, bus.HEADER_LAST_PING), _time(values, bus.HEADER_LAST_SYNC))


async def report(
    js: JetStreamContext,
    layout: Layout,
    address: Address,
    *,
    last_ping: int = 0,
    last_sync: int = 0,
    ack_wait_seconds: float = 5.0,
) -> None:
    """Send ``address`` in as heard from its node; raises what ``relay.bus.publish`` raises when
    JetStream does not take it."""
    body = canonical.encode(address)
    hdrs = headers(
        kind="address",
        source=FIRST_PARTY,
        message_id=f"{dedupe_id('address', body)}:{last_ping}:{last_sync}",
    )
    hdrs.update(marks(Sighting(last_ping, last_sync)))
    await publish(
        js, layout.ingest_subject("address"), body, headers=hdrs, ack_wait_seconds=ack_wait_seconds
    )


def marks(seen: Sighting) -> dict[str, str]:
    """The headers that carry ``seen``, beside ``Mim-Source: first-party``."""
    return {bus.HEADER_LAST_PING: str(seen.last_ping), bus.HEADER_LAST_SYNC: str(seen.last_sync)}


@dataclass(frozen=True, slots=True)
class Reporter:
    """:func:`report` bound to a JetStream context and a layout, for those who report often."""

    js: JetStreamContext
    layout: Layout
    ack_wait_seconds: float = 5.0

    async def __call__(self, address: Address, *, last_ping: int = 0, last_sync: int = 0) -> None:
        await report(
            self.js,
            self.layout,
            address,
            last_ping=last_ping,
            last_sync=last_sync,
            ack_wait_seconds=self.ack_wait_seconds,
        )
