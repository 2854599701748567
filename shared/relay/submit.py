"""The one way objects enter the node: publish them, unchecked, to the ingest stream.

The gateway (objects posted to us), the syncer (objects fetched from peers) and ``mimrelay
submit`` all call :func:`submit`, or :func:`submit_many` for many objects at once (one round of
acknowledgements instead of one per object). It does no verification (that is the validators'
job) and only a cheap peek at the JSON for the dedupe id,
``Nats-Msg-Id = kind:fingerprint:last_update:<digest>``, where the digest is the first 16 hex
digits of the SHA-256 of the bytes, so the same bytes sent twice within the dedupe window are
queued once. Bytes that do not decode (or an address, which
has no fingerprint) are named by the full SHA-256 of the bytes.

Why the digest: the id is taken before anything is verified, so without it a forged copy that
claims a genuine object's fingerprint (anyone can copy a fingerprint) would, sent first, make
JetStream drop the genuine object as a duplicate for the whole window. After validation, the
accepted stream dedupes on ``kind:fingerprint:last_update`` alone, which is safe there.

Errors: ``IngestFull`` when the ingest stream is at its limits (the gateway answers 429; retry
later), ``BusUnavailable`` when JetStream does not confirm (503), ``BusError`` when it refuses
for good (for example a message over the server's max payload), ``ValueError`` for a kind that
is not a Mim kind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Final

from nats.js import JetStreamContext
from nats.js.api import PubAck

from relay import RelayError, StreamFull
from relay.bus import KINDS, Layout, headers, msg_id, publish
from relay.publisher import Confirmed, Outgoing, Publisher

__all__ = ["SOURCES", "IngestFull", "dedupe_id", "submit", "submit_many"]

#: Where an object came from: submitted on this node, or fetched from a peer; carried in the
#: ``Mim-Source`` header for logs and metrics (first-party addresses say ``first-party``).
SOURCES: Final = ("local", "peer")


class IngestFull(StreamFull):
    """The ingest stream refused the object: the node is at capacity, try again later (429)."""


def dedupe_id(kind: str, raw: bytes) -> str:
    """The ``Nats-Msg-Id`` of ``raw``: from its fingerprint and last update, or its bytes' hash."""
    digest = hashlib.sha256(raw).hexdigest()
    fingerprint, last_update = _peek(raw) if kind != "address" else ("", 0)
    if not fingerprint:
        return msg_id(kind, "sha256-" + digest, 0)
    return f"{msg_id(kind, fingerprint, last_update)}:{digest[:16]}"


def _peek(raw: bytes) -> tuple[str, int]:
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return "", 0
    if not isinstance(doc, dict):
        return "", 0
    fingerprint, last_update = doc.get("fingerprint"), doc.get("last_update", 0)
    if not isinstance(fingerprint, str) or not fingerprint.isascii() or not fingerprint.isalnum():
        return "", 0  # not one the validator would accept; do not let it shape the id
    if not isinstance(last_update, int) or isinstance(last_update, bool) or last_update < 0:
        return "", 0
    return fingerprint[:64], last_update


async def submit(
    js: JetStreamContext,
    layout: Layout,
    kind: str,
    raw: bytes,
    *,
    source: str = "local",
    ack_wait_seconds: float = 5.0,
) -> PubAck:
    """Queue ``raw`` (one object's wire JSON) of ``kind`` for validation; returns JetStream's ack.

    ``ack.duplicate`` is set when the same version was queued within the dedupe window.
    """
    hdrs = _headers(kind, raw, source)
    try:
        return await publish(
            js, layout.ingest_subject(kind), raw, headers=hdrs, ack_wait_seconds=ack_wait_seconds
        )
    except StreamFull as exc:
        raise _full(exc) from exc


async def submit_many(
    publisher: Publisher,
    layout: Layout,
    objects: Sequence[tuple[str, bytes]],
    *,
    source: str = "local",
) -> list[Confirmed | RelayError]:
    """Queue every ``(kind, raw)`` of ``objects`` at once; per object its ack or its error.

    The errors are those :func:`submit` raises (``IngestFull``, ``BusUnavailable``, ``BusError``),
    returned in the object's place so one refusal does not hide the others' fate.
    """
    messages = [
        Outgoing(layout.ingest_subject(kind), raw, _headers(kind, raw, source))
        for kind, raw in objects
    ]
    results = await publisher.publish(messages)
    return [_full(r) if isinstance(r, StreamFull) else r for r in results]


def _full(refusal: StreamFull) -> IngestFull:
    return IngestFull(f"the ingest stream is full, try again later ({refusal})")


def _headers(kind: str, raw: bytes, source: str) -> dict[str, str]:
    if kind not in KINDS:
        raise ValueError(f"`kind`: {kind!r} is not one of {', '.join(KINDS)}")
    return headers(kind=kind, source=source, message_id=dedupe_id(kind, raw))
