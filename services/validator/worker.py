"""The validator: pull objects off the ingest stream, judge them, pass the verdict on.

Every replica binds the one durable pull consumer of the ingest stream, so JetStream spreads the
work and any number of replicas may run. For each fetched batch:

1. screen each message: its subject names a Mim kind, it is at most ``max_object_bytes``, and it
   has not already been delivered ``max_deliveries`` times (stages ``decode``, ``size``,
   ``delivery``);
2. verify the rest (``checks.judge``: ``mim.verify.verify`` with the node policy) on the event
   loop, ``CHUNK`` objects at a time with a yield between chunks, so the other batch in hand
   keeps publishing and acking. A replica is one process on one core: handing objects to other
   processes costs about as much as checking them, and threads fight the checks for the GIL;
   run one replica per core instead;
3. refuse what the block list names (stage ``blocked``);
4. publish accepted objects, as canonical JSON, to the accepted stream with
   ``Nats-Msg-Id = kind:fingerprint:last_update`` and rejections, with stage, reason and field,
   to the rejected stream with ``Nats-Msg-Id = rejected:<ingest sequence>``, so a redelivered
   message never doubles either;
5. only once JetStream has confirmed that publish (a batch is published at once and its
   acknowledgements gathered, :class:`relay.publisher.Publisher`), ``ack`` (accepted) or
   ``term`` (rejected) the ingest message, and flush, which waits for the server to have read
   the acks.

A publish that fails for a transient cause (the accepted stream full because the store is
behind or down, JetStream unavailable) is tried again by the validator itself with a growing
delay, the messages held and kept from redelivery (``in_progress``) meanwhile, for as long as it
takes: no new batch is fetched while both batches are held, so the ingest stream fills and the
gateway answers 429, and a sound object is never given up for an outage however long. Only a
message that keeps coming back for another reason (a publish refused for good, a validator that
died holding it) is rejected at stage ``delivery`` after ``max_deliveries`` deliveries, so
nothing is retried for ever. SIGTERM: the batches in hand finish (within the shutdown grace;
held messages are handed back at once), no new batch is taken, and messages never handed out
are given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from mim.verify import Verdict
from relay import RelayError, TransientError
from relay.bus import (
    HEADER_KIND,
    HEADER_MSG_ID,
    HEADER_SOURCE,
    KINDS,
    UNKNOWN_KIND,
    Layout,
    StreamLimits,
    ensure_blocklist,
    ensure_streams,
    header_value,
    headers,
    msg_id,
)
from relay.first_party import marks, sighting
from relay.publisher import Confirmed, Outgoing, Publisher
from relay.puller import Puller
from relay.runner import Context, sleep
from services.validator import metrics
from services.validator.blocklist import BlockList
from services.validator.checks import block_refs, judge
from services.validator.settings import ValidatorSettings

__all__ = ["Item", "Validator", "main"]

_log = structlog.stdlib.get_logger("services.validator")

#: Longest delay between two tries of a publish that keeps failing for a transient cause.
MAX_RETRY_DELAY_SECONDS: Final = 60.0
#: How often a held message is marked in progress: well within the consumer's 30 s ack wait.
PROGRESS_SECONDS: Final = 10.0
#: Batches a replica holds at once: one judged or published while the next is fetched and judged.
BATCHES_IN_FLIGHT: Final = 2
#: Objects checked between two yields to the event loop (about 5 ms of work).
CHUNK: Final = 32
#: The per-object verification timer, looked up once.
_VERIFY_TIME: Final = metrics.CHECK_DURATION.labels("verify")
#: How long start-up waits for the block list to be read before refusing to start.
BLOCKLIST_LOAD_SECONDS: Final = 30.0


@dataclass(slots=True)
class Item:
    """One fetched message on its way through a batch."""

    msg: Msg
    kind: str  # a Mim kind, or UNKNOWN_KIND
    seq: int
    delivered: int
    verdict: Verdict | None = None
    # set when the message is to be acked or termed
    publish: Outgoing | None = None
    final: str = ""  # "accepted" or "rejected"
    stage: str = ""
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return (self.msg.headers or {}).get(HEADER_SOURCE, "")


def ack_numbers(msg: Msg) -> tuple[int, int, int]:
    """``(stream sequence, deliveries, pending)`` of a JetStream message, from its reply subject.

    ``msg.metadata`` reads the same subject into nested objects and a datetime, which costs more
    per message than the rest of the validator's bookkeeping; these three numbers are all we use.
    The subject is ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<time>.<pending>``,
    or with domain and account hash after ``ACK`` and a random token at the end.
    """
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[4]), int(tokens[8])
    if len(tokens) >= 12:
        return int(tokens[7]), int(tokens[6]), int(tokens[10])
    meta = msg.metadata  # not a form we know: let nats-py say what it makes of it
    return meta.sequence.stream, meta.num_delivered, meta.num_pending


def _kind_of(subject: str) -> str:
    token = subject.rsplit(".", 1)[-1]
    return token if token in KINDS else UNKNOWN_KIND


class Validator:
    """Judges batches of ingest messages; holds no state across batches."""

    def __init__(
        self,
        nc: NATS,
        layout: Layout,
        settings: ValidatorSettings,
        blocks: BlockList,
        counters: Any = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.nc = nc
        self.stop = stop if stop is not None else asyncio.Event()
        self.layout = layout
        self.settings = settings
        self.blocks = blocks
        self.policy = settings.policy()
        self.counters = counters if counters is not None else {}
        self.publisher = Publisher(nc, timeout=settings.publish_timeout_seconds)
        self._accepted_subjects: dict[str, str] = {k: layout.accepted_subject(k) for k in KINDS}
        self._counted: dict[tuple[str, str], Any] = {}

    async def aclose(self) -> None:
        await self.publisher.close()

    # ---------------------------------------------------------------- one batch

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Judge, publish and ack ``msgs``; never raises for what the messages contain."""
        if not msgs:
            return
        metrics.BATCH_SIZE.observe(len(msgs))
        items = [self._item(m) for m in msgs]
        metrics.CONSUMER_PENDING.set(ack_numbers(msgs[-1])[2])
        to_judge = [i for i in items if not i.final and not self._screen(i)]
        if to_judge:
            await self._judge(to_judge)
        started = time.perf_counter()
        outgoing = [(i, i.publish) for i in items if i.publish is not None]
        results = await self.publisher.publish([message for _, message in outgoing])
        metrics.CHECK_DURATION.labels("publish").observe(time.perf_counter() - started)
        started = time.perf_counter()
        await self._settle([i for i, _ in outgoing], results)
        metrics.CHECK_DURATION.labels("ack").observe(time.perf_counter() - started)

    def _item(self, msg: Msg) -> Item:
        seq, delivered, _ = ack_numbers(msg)
        return Item(msg, _kind_of(msg.subject), seq, delivered)

    def _screen(self, item: Item) -> bool:
        """Reject ``item`` without verifying it if it cannot be an object; True if rejected."""
        s = self.settings
        size = len(item.msg.data)
        if item.delivered > s.max_deliveries:
            self._reject(item, "delivery", f"given up after {s.max_deliveries} deliveries",
                         "message", "delivery.max")  # fmt: skip
        elif item.kind == UNKNOWN_KIND:
            token = item.msg.subject.rsplit(".", 1)[-1]
            self._reject(item, "decode", f"`kind`: subject token {token[:64]!r} is not a Mim kind",
                         "kind", "kind.known")  # fmt: skip
        elif size > s.max_object_bytes:
            self._reject(item, "size", f"`object`: {size} bytes is over "
                         f"MIM_VALIDATOR_MAX_OBJECT_BYTES ({s.max_object_bytes})",
                         "object", "object.max_bytes")  # fmt: skip
        return bool(item.final)

    async def _judge(self, items: list[Item]) -> None:
        chunks = [items[n : n + CHUNK] for n in range(0, len(items), CHUNK)]
        judged = []
        for chunk in chunks:
            judged.append(judge([(i.kind, i.msg.data) for i in chunk], self.policy))
            await asyncio.sleep(0)  # let the other batch publish and ack
        verify_time = _VERIFY_TIME.observe
        started = time.perf_counter()
        for chunk, results in zip(chunks, judged, strict=True):
            for item, (verdict, seconds) in zip(chunk, results, strict=True):
                item.verdict = verdict
                verify_time(seconds)
                if not verdict.ok:
                    self._reject(item, verdict.stage, verdict.reason, verdict.field, verdict.rule)
                    continue
                hit = None
                if len(self.blocks) and verdict.entity is not None:
                    hit = self.blocks.match(block_refs(verdict.entity))
                if hit is not None:
                    why = self.blocks.reason(hit)
                    reason = f"`{hit}` is on the block list" + (f": {why}" if why else "")
                    self._reject(item, "blocked", reason, "fingerprint", "blocklist")
                else:
                    self._accept(item, verdict)
        metrics.CHECK_DURATION.labels("blocked").observe(time.perf_counter() - started)

    # ---------------------------------------------------------------- verdicts

    def _accept(self, item: Item, verdict: Verdict) -> None:
        kind = item.kind
        ident = verdict.fingerprint or _content_id(verdict.canonical)
        # what ``relay.bus.headers`` makes, built directly: the id and kind need no cleaning
        hdrs = {HEADER_MSG_ID: msg_id(kind, ident, verdict.last_update), HEADER_KIND: kind}
        source = item.source
        if source:
            hdrs[HEADER_SOURCE] = header_value(source)
            seen = sighting(item.msg.headers)
            if seen is not None:  # an address heard from its node: the times go on with it
                hdrs.update(marks(seen))
                hdrs[HEADER_MSG_ID] += f":{seen.last_ping}:{seen.last_sync}"
        item.final = "accepted"
        item.publish = Outgoing(self._accepted_subjects[kind], verdict.canonical, hdrs)

    def _reject(self, item: Item, stage: str, reason: str, field_: str, rule: str) -> None:
        verdict = item.verdict
        data = bytes(item.msg.data)
        keep = self.settings.rejected_object_bytes
        record = {
            "kind": item.kind,
            "stage": stage,
            "reason": reason,
            "field": field_,
            "rule": rule,
            "fingerprint": verdict.fingerprint if verdict else "",
            "last_update": verdict.last_update if verdict else 0,
            "subject": item.msg.subject,
            "ingest_sequence": item.seq,
            "deliveries": item.delivered,
            "size": len(data),
            "source": item.source,
            "object": data[:keep].decode("utf-8", "replace"),
            "truncated": len(data) > keep,
        }
        hdrs = headers(
            kind=item.kind,
            stage=stage,
            reason=reason,
            source=item.source or None,
            message_id=f"rejected:{self.layout.ingest_stream}:{item.seq}",
        )
        body = json.dumps(record, ensure_ascii=False).encode()
        item.final, item.stage, item.reason = "rejected", stage, reason
        item.extra = {"field": field_, "rule": rule, "fingerprint": record["fingerprint"]}
        item.publish = Outgoing(self.layout.rejected_subject(item.kind, stage), body, hdrs)

    # ---------------------------------------------------------------- acks

    async def _settle(self, items: list[Item], results: Sequence[Confirmed | RelayError]) -> None:
        held, error = await self._sort(items, results)
        if held and error is not None:
            await self._hold(held, error)
        try:
            await self.nc.flush(timeout=max(1, round(self.settings.publish_timeout_seconds)))
        except (nats.errors.Error, TimeoutError) as exc:
            # the acks may not have arrived: those messages come back, and the dedupe ids make
            # their second publish a no-op
            _log.warning("ack_flush_failed", error=repr(exc))

    async def _sort(
        self, items: list[Item], results: Sequence[Confirmed | RelayError]
    ) -> tuple[list[Item], RelayError | None]:
        """Settle what was confirmed, hand back what was refused, and return what failed for a
        transient cause, with the last such error."""
        held: list[Item] = []
        refused: list[Item] = []
        error: RelayError | None = None
        for item, result in zip(items, results, strict=True):
            if isinstance(result, Confirmed):
                await self._finish(item, result)
            elif isinstance(result, TransientError):
                held.append(item)
                error = result
            else:
                # refused for good (too large for the server, say): say so, then redeliver
                # until the delivery budget rejects it, rather than acking what is not stored
                _log.error("publish_refused", seq=item.seq, kind=item.kind, error=str(result))
                refused.append(item)
        if refused:
            await self._retry(refused, "publish")
        return held, error

    async def _finish(self, item: Item, result: Confirmed) -> None:
        """Ack (accepted) or term (rejected) ``item``, its verdict's publish confirmed."""
        if item.final == "accepted":
            outcome = "duplicate" if result.duplicate else "accepted"
            self._count(item.kind, outcome)
            self.counters[outcome] = self.counters.get(outcome, 0) + 1
            await item.msg.ack()
        else:
            self._count(item.kind, "rejected")
            metrics.REJECTIONS.labels(item.kind, item.stage).inc()
            self.counters["rejected"] = self.counters.get("rejected", 0) + 1
            _log.info("object_rejected", kind=item.kind, seq=item.seq, stage=item.stage,
                      reason=item.reason, **item.extra)  # fmt: skip
            await item.msg.term()

    async def _hold(self, items: list[Item], error: RelayError) -> None:
        """Publish ``items`` again until JetStream takes them, with a growing delay.

        A transient failure says nothing about the messages: redelivering them would spend their
        delivery budget on the outage, and a long one would reject sound objects. They stay in
        hand instead, marked in progress so the server does not hand them to another replica.
        On stop they are given back at once for whoever runs next.
        """
        delay = max(self.settings.retry_delay_seconds, 0.05)
        tries = 1
        while items:
            metrics.RETRIES.labels("publish").inc(len(items))
            _log.warning("publish_held", objects=len(items), tries=tries, error=str(error),
                         next_try_seconds=round(delay, 2))  # fmt: skip
            due = time.monotonic() + delay
            while (left := due - time.monotonic()) > 0:
                if await sleep(self.stop, min(left, PROGRESS_SECONDS)):
                    await _each(items, Msg.nak)
                    return
                await _each(items, Msg.in_progress)
            outgoing = [item.publish for item in items if item.publish is not None]
            items, last = await self._sort(items, await self.publisher.publish(outgoing))
            error = last or error
            delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)
            tries += 1

    def _count(self, kind: str, outcome: str) -> None:
        """``mim_validator_objects_total{kind, outcome}`` += 1, its child looked up once."""
        child = self._counted.get((kind, outcome))
        if child is None:
            child = self._counted[kind, outcome] = metrics.OBJECTS.labels(kind, outcome)
        child.inc()

    async def _retry(self, items: list[Item], cause: str) -> None:
        for item in items:
            delay = min(
                self.settings.retry_delay_seconds * 2 ** max(0, item.delivered - 1),
                MAX_RETRY_DELAY_SECONDS,
            )
            metrics.RETRIES.labels(cause).inc()
            item.publish = None
            try:
                await item.msg.nak(delay=delay)
            except nats.errors.Error as exc:
                _log.warning("nak_failed", seq=item.seq, error=repr(exc))


async def _each(items: list[Item], step: Callable[[Msg], Awaitable[None]]) -> None:
    """``step`` (nak, in_progress) on each item's message; one the bus refuses is left to its
    ack wait."""
    for item in items:
        with contextlib.suppress(nats.errors.Error):
            await step(item.msg)


def _content_id(data: bytes) -> str:
    import hashlib  # noqa: PLC0415 - only addresses, which have no fingerprint, need it

    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the service


async def main(ctx: Context) -> None:
    """Run the validator until ``ctx.stop`` is set."""
    settings = cast(ValidatorSettings, ctx.settings)
    layout = Layout.from_settings(settings)
    nc = await ctx.nats()
    js = nc.jetstream(timeout=settings.publish_timeout_seconds)
    await ensure_streams(js, layout, StreamLimits.from_settings(settings))
    kv = await ensure_blocklist(js, layout)
    blocks = BlockList()
    ctx.spawn(blocks.run(kv, ctx.stop, settings.blocklist_refresh_seconds), name="blocklist")
    await asyncio.wait_for(blocks.loaded.wait(), BLOCKLIST_LOAD_SECONDS)
    validator = Validator(nc, layout, settings, blocks, ctx.counters, ctx.stop)
    ctx.stack.push_async_callback(validator.aclose)
    await validator.publisher.start()
    puller = Puller(nc, layout.ingest_stream, layout.validator_consumer, batch=settings.batch_size)
    ctx.stack.push_async_callback(puller.close)
    await puller.start()
    _log.info("validator_started", consumer=layout.validator_consumer,
              batch_size=settings.batch_size,
              min_pow=settings.min_pow)  # fmt: skip
    ctx.mark_ready()
    await _consume(ctx, puller, validator, settings)


async def _consume(
    ctx: Context,
    puller: Puller,
    validator: Validator,
    settings: ValidatorSettings,
) -> None:
    """Fetch and handle batches, up to ``BATCHES_IN_FLIGHT`` at once, until ``ctx.stop``.

    While one batch waits for its publishes to be confirmed, the next is judged, so the checks
    and the bus are busy together. Each batch still acks only its own
    confirmed messages; the consumer's ``max_ack_pending`` is far above the messages held.
    """
    slots = asyncio.Semaphore(BATCHES_IN_FLIGHT)
    running: set[asyncio.Task[None]] = set()

    async def handle(msgs: list[Msg]) -> None:
        try:
            await validator.handle(msgs)
        finally:
            slots.release()

    try:
        while not ctx.stop.is_set():
            await slots.acquire()
            msgs = await puller.take(settings.batch_size, settings.fetch_timeout_seconds)
            if not msgs:
                slots.release()
                continue
            task = asyncio.create_task(handle(msgs), name="validator-batch")
            running.add(task)
            task.add_done_callback(running.discard)
    finally:
        # the batches in hand finish (the runner's grace bounds this); a failure surfaces here
        await asyncio.gather(*running)
