"""Following objects sent to the node until its store holds them or a validator refuses them.

This is ``--wait`` of ``mimrelay submit`` and ``mimrelay import``. The store's tables say what is
held (:mod:`relay.db.objects`: the fingerprint at the object's last update or a later one;
:mod:`relay.db.addresses`: the place an address names). The rejected stream says what was
refused: each record names the ingest sequence of the message it refused, with the stage and the
reason. Sequences, not fingerprints, match a refusal to its object, since an object that does not
decode has no fingerprint and a forged copy of a genuine object claims the genuine one's.

Outcomes are reported in the order the objects were sent, each as soon as it and those before it
are known; an object the gateway refused before queueing it (``Sent.refused``) is rejected at
once. Whatever is neither held nor refused after ``timeout`` seconds is ``pending``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import asyncpg
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from relay.bus import Layout
from relay.cli.feed import Sent
from relay.db import addresses, objects

__all__ = ["Outcome", "follow"]

_FIRST_POLL: Final = 0.1
_LONGEST_POLL: Final = 1.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one object: stored, rejected (at ``stage``, because ``reason``), or
    pending (neither, within the time given)."""

    word: Literal["stored", "rejected", "pending"]
    stage: str = ""
    reason: str = ""


async def follow(
    nc: NATS,
    pool: asyncpg.Pool,
    layout: Layout,
    sent: Sequence[Sent],
    *,
    timeout: float,  # noqa: ASYNC109 - a deadline over many polls, not one call's timeout
    look_back_seconds: float,
    report: Callable[[Sent, Outcome], None],
) -> list[Outcome]:
    """Follow every object of ``sent``; ``report`` each outcome in order; return them all.

    Refusals are read from ``look_back_seconds`` ago (objects already queued before may have
    been refused before).
    """
    outcomes: list[Outcome | None] = [
        None if one.refused is None else Outcome("rejected", *one.refused) for one in sent
    ]
    by_seq: dict[int, list[int]] = defaultdict(list)
    for n, one in enumerate(sent):
        if one.refused is None:
            by_seq[one.seq].append(n)

    async def refused(msg: Msg) -> None:
        try:
            record = json.loads(msg.data)
            indices = by_seq.get(int(record["ingest_sequence"]), [])
            outcome = Outcome("rejected", str(record["stage"]), str(record["reason"]))
        except (ValueError, TypeError, KeyError):
            return  # not a rejection record: nothing of ours
        for n in indices:
            outcomes[n] = outcome

    since = datetime.now(UTC) - timedelta(seconds=look_back_seconds)
    subscription = await nc.jetstream().subscribe(
        layout.rejected_subjects,
        stream=layout.rejected_stream,
        cb=refused,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since),
    )
    try:
        return await _poll(pool, sent, outcomes, time.monotonic() + timeout, report)
    finally:
        await subscription.unsubscribe()


async def _poll(
    pool: asyncpg.Pool,
    sent: Sequence[Sent],
    outcomes: list[Outcome | None],
    deadline: float,
    report: Callable[[Sent, Outcome], None],
) -> list[Outcome]:
    reported = 0
    pause = _FIRST_POLL
    while True:
        await _mark_stored(pool, sent, outcomes)
        expired = time.monotonic() >= deadline
        while reported < len(sent) and (outcomes[reported] is not None or expired):
            outcome = outcomes[reported] or Outcome("pending")
            outcomes[reported] = outcome
            report(sent[reported], outcome)
            reported += 1
        if reported == len(sent):
            return [o for o in outcomes if o is not None]
        await asyncio.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
        pause = min(pause * 2, _LONGEST_POLL)


async def _mark_stored(
    pool: asyncpg.Pool, sent: Sequence[Sent], outcomes: list[Outcome | None]
) -> None:
    """Mark each unsettled object the store holds (at its version or a later one)."""
    waiting: dict[str, list[int]] = defaultdict(list)
    for n, one in enumerate(sent):
        if outcomes[n] is None and one.name:
            waiting[one.kind].append(n)
    for kind, indices in waiting.items():
        if kind == "address":
            places = [p for p in (sent[n].address for n in indices) if p is not None]
            held = await addresses.held(pool, places)
            done = [n for n in indices if sent[n].address in held]
        else:
            fingerprints = sorted({sent[n].name for n in indices})
            rows = await objects.with_fingerprints(pool, kind, fingerprints)
            versions = {row.fingerprint: row.last_update for row in rows}
            done = [n for n in indices if versions.get(sent[n].name, -1) >= sent[n].last_update]
        for n in done:
            outcomes[n] = Outcome("stored")
