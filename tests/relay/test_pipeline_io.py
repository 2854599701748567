"""relay.publisher and relay.puller against a real nats-server: batches confirmed one by one,
refusals in their place, messages handed out as they come and given back on close."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
from nats.aio.client import Client as NATS

from relay import BusError, BusUnavailable, StreamFull
from relay.bus import HEADER_MSG_ID, Layout, StreamLimits, ensure_streams
from relay.embedded import NatsServer, free_port
from relay.publisher import Confirmed, Outgoing, Publisher
from relay.puller import Puller


def _messages(layout: Layout, count: int, start: int = 0) -> list[Outgoing]:
    return [
        Outgoing(layout.ingest_subject("post"), f"object {n}".encode(), {HEADER_MSG_ID: f"id-{n}"})
        for n in range(start, start + count)
    ]


async def test_a_batch_is_confirmed_message_by_message(nc: NATS, stream_prefix: str) -> None:
    """Every message gets its own stream sequence, in order; a resent id is a duplicate."""
    layout = Layout(stream_prefix)
    await ensure_streams(nc.jetstream(), layout, StreamLimits())
    publisher = await Publisher(nc).start()
    first = await publisher.publish(_messages(layout, 300))
    assert all(isinstance(r, Confirmed) for r in first)
    seqs = [r.seq for r in first if isinstance(r, Confirmed)]
    assert seqs == list(range(seqs[0], seqs[0] + 300))
    assert {r.stream for r in first if isinstance(r, Confirmed)} == {layout.ingest_stream}
    again = await publisher.publish(_messages(layout, 2, start=299))
    assert [(r.duplicate if isinstance(r, Confirmed) else r) for r in again] == [True, False]
    info = await nc.jetstream().stream_info(layout.ingest_stream)
    assert info.state.messages == 301
    assert await publisher.publish([]) == []
    await publisher.close()


async def test_refusals_stand_in_the_place_of_their_message(nc: NATS, stream_prefix: str) -> None:
    """A full stream refuses what does not fit (StreamFull), a subject no stream takes gets
    BusUnavailable, a message over the server's max payload BusError; the rest are stored."""
    layout = Layout(stream_prefix)
    await ensure_streams(nc.jetstream(), layout, StreamLimits(max_msgs=3))
    publisher = await Publisher(nc, timeout=2).start()
    results = await publisher.publish(
        [
            *_messages(layout, 4),
            Outgoing(f"{stream_prefix.lower()}.nowhere", b"x"),
            Outgoing(layout.ingest_subject("post"), b"x" * (nc.max_payload + 1)),
        ]
    )
    assert [type(r) for r in results] == [
        Confirmed,
        Confirmed,
        Confirmed,
        StreamFull,
        BusUnavailable,
        BusError,
    ]
    assert "max payload" in str(results[5])
    info = await nc.jetstream().stream_info(layout.ingest_stream)
    assert info.state.messages == 3


async def test_puller_hands_out_what_arrives_and_gives_back_the_rest(
    nc: NATS, stream_prefix: str
) -> None:
    """take() returns as soon as messages are there, never more than asked; an empty consumer
    gives [] after the wait; close() naks what was never handed out, so another consumer gets it
    again at once (second delivery), and nothing is lost or handed out twice."""
    layout = Layout(stream_prefix)
    js = nc.jetstream()
    await ensure_streams(js, layout, StreamLimits())
    stream, durable = layout.ingest_stream, layout.validator_consumer
    puller = await Puller(nc, stream, durable, batch=16).start()
    assert await puller.take(10, 0.2) == []

    await Publisher(nc).publish(_messages(layout, 40))
    first = await puller.take(10, 5)
    assert 1 <= len(first) <= 10
    for msg in first:
        await msg.ack()
    await asyncio.sleep(0.3)  # let the requests in flight deliver into the puller's hands
    await puller.close()

    seen = {m.data for m in first}
    again = await Puller(nc, stream, durable, batch=64).start()
    redelivered = 0
    while len(seen) < 40:
        batch = await again.take(64, 5)
        assert batch, f"only {len(seen)} of 40 came back"
        for msg in batch:
            assert msg.data not in seen
            seen.add(msg.data)
            redelivered += msg.metadata.num_delivered > 1
            await msg.ack()
    await again.close()
    assert redelivered > 0  # those the first puller held were given back, not waited out
    # the server applies acks a moment after it reads them: wait (well under the 30 s ack wait)
    for _ in range(100):
        info = await js.consumer_info(stream, durable)
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
    assert (info.num_ack_pending, info.num_pending) == (0, 0)


async def test_puller_asks_again_at_once_after_a_reconnect(tmp_path: Path) -> None:
    """Pull requests die with the connection: after nats-server is killed (no goodbye for the
    requests) and restarted, the puller asks anew on its next take instead of waiting for the
    lost requests to time out, so messages published after the restart come within a second."""
    server = NatsServer(tmp_path / "nats", port=free_port()).start()
    try:
        client = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        layout = Layout("RECONNECT")
        await ensure_streams(client.jetstream(), layout, StreamLimits())
        puller = Puller(client, layout.ingest_stream, layout.validator_consumer, batch=8)
        assert await (await puller.start()).take(8, 0.2) == []  # requests now outstanding
        server.kill()
        server.start()
        for _ in range(100):
            if client.stats["reconnects"] and client.is_connected:
                break
            await asyncio.sleep(0.1)
        assert client.stats["reconnects"] == 1
        results = await Publisher(client).publish(_messages(layout, 3))
        assert all(isinstance(r, Confirmed) for r in results), results
        started = time.monotonic()
        got: list[bytes] = []
        while len(got) < 3 and time.monotonic() - started < 1.5:
            got += [m.data for m in await puller.take(8, 0.25)]
        assert sorted(got) == [b"object 0", b"object 1", b"object 2"]
        await puller.close()
        await client.close()
    finally:
        server.stop()
