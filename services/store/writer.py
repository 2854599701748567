"""The writer: a pull consumer on the accepted stream that stores each batch in one transaction.

Loop: fetch up to ``batch_size`` messages → decode → write all of them in one transaction →
commit → ack every message. Nothing is acked before its commit, so a crash at any point leaves
the batch on the stream and the redelivery is harmless: every write is idempotent by fingerprint
and version (§14), and addresses by location. A database error naks the batch with a delay, counts
``mim_store_db_errors_total`` and backs off (doubling, capped) before fetching again; the pool
replaces broken connections on the next acquire. A message that cannot be decoded (which the
validator should never pass) is counted as refused, logged and terminated so it cannot stall the
stream. On stop the loop finishes the batch in hand and returns.

Message format (published by the validator): body = canonical JSON of one object, header
``Mim-Kind`` = its kind (the subject's last token is the fallback). The body is stored as it
came: the validator encoded it, and encoding it again would only cost time. The accepted stream
is trusted as far as that, as it is for the checks it stands for. An address whose
``Mim-Source`` header is ``first-party`` was heard from the node itself (§13.6): the gateway and
the syncer send those in like any object (:mod:`relay.first_party`), and the validator passes on
the times of the last ping and sync in headers. Every address is checked by
:func:`relay.location.checked` first: it is stored at its canonical place, or refused (counted with
outcome ``refused`` and logged ``address_refused``) when it names a place the node may not dial.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, cast

import asyncpg
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mim import MimError, parse
from mim.entities import Address, Provable
from relay import AddressRefused
from relay import logging as relay_logging
from relay.bus import HEADER_KIND, KINDS, Layout
from relay.db import Conn, addresses, storing
from relay.first_party import sighting
from relay.location import AddressRules, checked
from relay.puller import Puller
from relay.runner import sleep
from services.store import metrics

__all__ = ["BatchResult", "Writer"]

# Failures after which the database may answer again: lost or refused connections, a server
# shutting down, a statement cut off. Anything else is a bug or bad data, not a reason to wait.
_TRANSIENT: Final = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
    # a connection whose server died under it: PostgreSQL said so (FATAL) before the socket closed
    asyncpg.InternalClientError,
)

_log = relay_logging.get_logger(__name__)


@dataclass(slots=True)
class BatchResult:
    """What one batch did."""

    outcomes: dict[str, int] = field(default_factory=dict)
    terminated: int = 0


@dataclass(slots=True)
class _Item:
    msg: Msg
    kind: str
    entity: Provable | Address


class Writer:
    """Stores what arrives on the accepted stream; ``run`` until ``stop`` is set."""

    def __init__(
        self,
        nc: NATS,
        pool: asyncpg.Pool,
        layout: Layout,
        *,
        batch_size: int = 256,
        fetch_timeout: float = 1.0,
        address_table_max: int = 1000,
        address_rules: AddressRules | None = None,
        retry_min: float = 0.2,
        retry_max: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._pool = pool
        self._layout = layout
        self._batch_size = batch_size
        self._fetch_timeout = fetch_timeout
        self._address_max = address_table_max
        self._address_rules = address_rules or AddressRules()
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._clock = clock
        self.handled = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished first."""
        layout = self._layout
        puller = Puller(self._nc, layout.accepted_stream, layout.store_consumer,
                        batch=self._batch_size)  # fmt: skip
        await puller.start()
        delay = self._retry_min
        try:
            while not stop.is_set():
                msgs = await puller.take(self._batch_size, self._fetch_timeout)
                if not msgs:
                    await self._update_pending()
                    continue
                try:
                    await self.write_batch(msgs)
                except _TRANSIENT as exc:
                    metrics.DB_ERRORS.inc()
                    _log.warning(
                        "batch_write_failed", error=repr(exc), size=len(msgs), retry_s=delay
                    )
                    await _settle(msgs, functools.partial(Msg.nak, delay=delay))
                    await sleep(stop, delay)
                    delay = min(delay * 2, self._retry_max)
                    continue
                delay = self._retry_min
        finally:
            await puller.close()

    async def _update_pending(self) -> None:
        try:
            info = await self._js.consumer_info(
                self._layout.accepted_stream, self._layout.store_consumer
            )
        except (TimeoutError, nats.errors.Error):
            return
        metrics.PENDING.set((info.num_pending or 0) + (info.num_ack_pending or 0))

    async def write_batch(self, msgs: list[Msg]) -> BatchResult:
        """Decode and store ``msgs`` in one transaction, then ack them; raise on database errors."""
        result = BatchResult()
        items: list[_Item] = []
        for msg in msgs:
            item = _decode(msg)
            if item is None:
                metrics.OBJECTS.labels(kind=_kind_of(msg) or "unknown", outcome="refused").inc()
                result.terminated += 1
                await msg.term()
            else:
                items.append(item)
        started = time.perf_counter()
        now = int(self._clock())
        async with self._pool.acquire() as conn, conn.transaction():
            provable = [i for i in items if not isinstance(i.entity, Address)]
            provables = [cast(Provable, i.entity) for i in provable]
            bodies = [_text(i.msg.data) for i in provable]
            outcomes = await storing.store_objects(conn, provables, now, bodies)
            addresses = await self._store_addresses(conn, items, now)
        metrics.WRITE_DURATION.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(msgs))
        # Committed: from here on a crash only causes a harmless redelivery.
        await _settle([i.msg for i in items], Msg.ack)
        for entity, outcome in zip(provables, outcomes, strict=True):
            metrics.OBJECTS.labels(kind=entity.kind, outcome=outcome).inc()
            result.outcomes[outcome] = result.outcomes.get(outcome, 0) + 1
        for source, address_outcome in addresses:
            metrics.ADDRESSES.labels(source=source, outcome=address_outcome).inc()
        self.handled += len(msgs)
        _log.info("batch_stored", size=len(msgs), addresses=len(addresses), **result.outcomes)
        return result

    async def _store_addresses(
        self, conn: Conn, items: list[_Item], now: int
    ) -> list[tuple[str, str]]:
        done: list[tuple[str, str]] = []
        for item in items:
            if not isinstance(item.entity, Address):
                continue
            seen = sighting(item.msg.headers)
            source = "third_party" if seen is None else "first_party"
            try:
                address = checked(item.entity, self._address_rules)
            except AddressRefused as exc:
                _log.info("address_refused", source=source, rule=exc.rule, reason=exc.reason)
                done.append((source, "refused"))
                continue
            if seen is not None:
                written = await addresses.store_first_party(
                    conn, address, now, last_ping=seen.last_ping, last_sync=seen.last_sync
                )
            else:
                written = await addresses.store_third_party(conn, address, now)
            done.append((source, written))
        if any(outcome != "refused" for _, outcome in done):
            await addresses.prune(conn, self._address_max)
        return done


def _kind_of(msg: Msg) -> str | None:
    kind = (msg.headers or {}).get(HEADER_KIND) or msg.subject.rsplit(".", 1)[-1]
    return kind if kind in KINDS else None


def _decode(msg: Msg) -> _Item | None:
    kind = _kind_of(msg)
    if kind is None:
        _log.error("stored_message_refused", subject=msg.subject, rule="kind.known")
        return None
    try:
        entity = parse(kind, msg.data)
    except MimError as exc:
        _log.error("stored_message_refused", subject=msg.subject, kind=kind, reason=str(exc))
        return None
    return _Item(msg, kind, entity)


async def _settle(msgs: list[Msg], answer: Callable[[Msg], Awaitable[None]]) -> None:
    """Ack or nak ``msgs`` one after the other (each only queues a few bytes); one that fails
    (NATS gone) only means a later redelivery, and is logged."""
    failed: list[BaseException] = []
    for msg in msgs:
        try:
            await answer(msg)
        except nats.errors.Error as exc:
            failed.append(exc)
    if failed:
        _log.warning("acknowledgement_failed", count=len(failed), error=repr(failed[0]))


def _text(data: bytes) -> str | None:
    """The accepted stream carries canonical JSON (the validator encodes what it accepts)."""
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None  # not ours: let the store encode the entity itself
