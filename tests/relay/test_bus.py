"""relay.bus: names from the prefix, idempotent concurrent set-up, full streams refuse, dedupe."""

from __future__ import annotations

import asyncio
import sys

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, RetentionPolicy, StreamConfig

from relay import BusError, StreamFull
from relay.bus import (
    HEADER_KIND,
    HEADER_MSG_ID,
    HEADER_REASON,
    KINDS,
    MAX_HEADER_VALUE,
    UNKNOWN_KIND,
    Layout,
    StreamLimits,
    ensure_blocklist,
    ensure_streams,
    headers,
    msg_id,
    publish,
)
from relay.settings import NodeSettings
from tests.helpers.procs import REPO


def test_names_follow_the_prefix() -> None:
    """Stream and consumer names are upper case, subjects lower case, all from the prefix."""
    layout = Layout("Node2")
    assert layout.ingest_stream == "NODE2_INGEST"
    assert layout.accepted_stream == "NODE2_ACCEPTED"
    assert layout.rejected_stream == "NODE2_REJECTED"
    assert layout.validator_consumer == "NODE2_VALIDATOR"
    assert layout.store_consumer == "NODE2_STORE"
    assert layout.blocklist_bucket == "NODE2_BLOCKLIST"
    assert layout.ingest_subject("post") == "node2.ingest.post"
    assert layout.ingest_subjects == "node2.ingest.*"
    assert layout.accepted_subject("vote") == "node2.accepted.vote"
    assert layout.rejected_subject(UNKNOWN_KIND, "decode") == "node2.rejected.unknown.decode"
    assert layout.rejected_subjects == "node2.rejected.>"
    assert layout.miner_request_subject == "node2.miner.request"
    assert layout.miner_queue_group == "node2-miners"
    assert layout.miner_split_subject == "node2.miner.split"
    assert layout.miner_cancel_subject("AB12") == "node2.miner.cancel.ab12"
    assert layout.miner_cancel_subjects == "node2.miner.cancel.*"
    assert Layout.from_settings(NodeSettings()) == Layout("MIM")
    assert set(KINDS) == {"board", "thread", "post", "vote", "key", "truststate", "address"}


def test_the_replica_count_comes_from_the_node_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """``MIM_STREAM_REPLICAS`` reaches every layout made from the settings; a count JetStream
    cannot keep is refused."""
    monkeypatch.setenv("MIM_STREAM_REPLICAS", "3")
    assert Layout.from_settings(NodeSettings()) == Layout("MIM", replicas=3)
    for replicas in (0, 6):
        with pytest.raises(ValueError, match="replicas"):
            Layout("MIM", replicas=replicas)


async def test_more_replicas_than_one_server_keeps_is_a_bus_error(
    nc: NATS, stream_prefix: str
) -> None:
    """Streams and buckets are created with the layout's replica count: a single nats-server
    refuses three copies, and the error names the stream or bucket."""
    layout = Layout(stream_prefix, replicas=3)
    with pytest.raises(BusError, match=rf"{stream_prefix}_(INGEST|ACCEPTED|REJECTED).*replicas"):
        await ensure_streams(nc.jetstream(), layout)
    with pytest.raises(BusError, match=rf"{layout.blocklist_bucket}.*replicas"):
        await ensure_blocklist(nc.jetstream(), layout)


def test_bad_prefix_and_tokens_are_refused() -> None:
    """A prefix or token that would make a wildcard or an extra subject level is refused."""
    for prefix in ("", "a.b", "x*", "9lives", "a" * 33):
        with pytest.raises(ValueError, match="stream prefix"):
            Layout(prefix)
    layout = Layout()
    for kind in ("po.st", "*", ">", "", "Post"):
        with pytest.raises(ValueError, match="subject token"):
            layout.ingest_subject(kind)


def test_msg_id_and_headers() -> None:
    """Msg ids name kind, fingerprint and version; header values are one bounded line."""
    assert msg_id("post", "ab" * 32, 1700000000) == f"post:{'ab' * 32}:1700000000"
    assert msg_id("post", "cd", None) == "post:cd:0"
    built = headers(kind="post", reason="line one\r\nline two\t end", message_id="post:cd:0")
    assert built == {
        HEADER_MSG_ID: "post:cd:0",
        HEADER_KIND: "post",
        HEADER_REASON: "line one line two end",
    }
    assert len(headers(reason="x" * 5000)[HEADER_REASON]) == MAX_HEADER_VALUE


async def test_ensure_creates_streams_and_consumers(nc: NATS, stream_prefix: str) -> None:
    """Streams get the retention and discard policies of their role, consumers exist."""
    layout = Layout(stream_prefix)
    js = nc.jetstream()
    await ensure_streams(js, layout, StreamLimits(max_msgs=50, duplicate_window_seconds=30))
    ingest = (await js.stream_info(layout.ingest_stream)).config
    assert ingest.retention == RetentionPolicy.WORK_QUEUE
    assert ingest.discard == DiscardPolicy.NEW
    assert ingest.max_msgs == 50
    assert ingest.duplicate_window == 30
    assert ingest.subjects == [layout.ingest_subjects]
    rejected = (await js.stream_info(layout.rejected_stream)).config
    assert rejected.retention == RetentionPolicy.LIMITS
    assert rejected.discard == DiscardPolicy.OLD
    assert rejected.max_age == StreamLimits().rejected_max_age_seconds
    validator = await js.consumer_info(layout.ingest_stream, layout.validator_consumer)
    store = await js.consumer_info(layout.accepted_stream, layout.store_consumer)
    assert validator.config.durable_name == layout.validator_consumer
    assert store.config.ack_wait == StreamLimits().ack_wait_seconds


async def test_ensure_is_idempotent_and_updates_limits(nc: NATS, stream_prefix: str) -> None:
    """Running set-up again is harmless; new limits are applied to the existing stream."""
    layout = Layout(stream_prefix)
    js = nc.jetstream()
    await ensure_streams(js, layout)
    await ensure_streams(js, layout)
    await ensure_streams(js, layout, StreamLimits(max_msgs=123, max_ack_pending=7))
    assert (await js.stream_info(layout.ingest_stream)).config.max_msgs == 123
    consumer = await js.consumer_info(layout.ingest_stream, layout.validator_consumer)
    assert consumer.config.max_ack_pending == 7


async def test_concurrent_ensure_from_many_tasks(nats_url: str, stream_prefix: str) -> None:
    """Eight services starting at once, on their own connections, all succeed."""
    layout = Layout(stream_prefix)
    clients = [await nats.connect(nats_url) for _ in range(8)]
    try:
        await asyncio.gather(*(ensure_streams(c.jetstream(), layout) for c in clients))
        await asyncio.gather(
            *(
                ensure_streams(c.jetstream(), layout, StreamLimits(max_msgs=10 + i))
                for i, c in enumerate(clients)
            )
        )
        info = await clients[0].jetstream().stream_info(layout.ingest_stream)
        assert info.config.max_msgs in range(10, 18)
    finally:
        for client in clients:
            await client.close()


async def test_concurrent_ensure_from_processes(nats_url: str, stream_prefix: str) -> None:
    """Four processes running set-up at the same moment all exit 0."""
    code = (
        "import asyncio, nats, sys\n"
        "from relay.bus import Layout, ensure_streams, ensure_blocklist\n"
        "async def main():\n"
        "    nc = await nats.connect(sys.argv[1])\n"
        "    await ensure_streams(nc.jetstream(), Layout(sys.argv[2]))\n"
        "    await ensure_blocklist(nc.jetstream(), Layout(sys.argv[2]))\n"
        "    await nc.close()\n"
        "asyncio.run(main())\n"
    )
    argv = [sys.executable, "-c", code, nats_url, stream_prefix]
    procs = [
        await asyncio.create_subprocess_exec(*argv, cwd=REPO, stderr=asyncio.subprocess.PIPE)
        for _ in range(4)
    ]
    results = await asyncio.gather(*(p.communicate() for p in procs))
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in results]


async def test_full_stream_refuses_new_and_keeps_old(nc: NATS, stream_prefix: str) -> None:
    """At its limit the ingest stream refuses a publish with StreamFull and keeps what it has."""
    layout = Layout(stream_prefix)
    js = nc.jetstream()
    await ensure_streams(js, layout, StreamLimits(max_msgs=3))
    subject = layout.ingest_subject("post")
    for n in range(3):
        await publish(js, subject, b"%d" % n, headers=headers(message_id=f"m{n}"))
    with pytest.raises(StreamFull, match="maximum messages"):
        await publish(js, subject, b"3", headers=headers(message_id="m3"))
    info = await js.stream_info(layout.ingest_stream)
    assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (3, 1, 3)
    assert StreamFull.status == 429


async def test_full_by_bytes_also_refuses(nc: NATS, stream_prefix: str) -> None:
    """The byte limit refuses too, before anything accepted is dropped."""
    layout = Layout(stream_prefix)
    js = nc.jetstream()
    await ensure_streams(js, layout, StreamLimits(max_bytes=4096))
    subject = layout.accepted_subject("post")
    with pytest.raises(StreamFull):
        for n in range(100):
            await publish(js, subject, b"x" * 500, headers=headers(message_id=f"b{n}"))
    info = await js.stream_info(layout.accepted_stream)
    assert info.state.first_seq == 1
    assert 0 < info.state.messages < 100


async def test_rejected_stream_drops_oldest(nc: NATS, stream_prefix: str) -> None:
    """The rejected stream is a bounded log: when full the oldest entries make room."""
    layout = Layout(stream_prefix)
    js = nc.jetstream()
    await ensure_streams(js, layout, StreamLimits(rejected_max_msgs=5))
    for n in range(8):
        await publish(js, layout.rejected_subject("post", "pow"), b"%d" % n)
    info = await js.stream_info(layout.rejected_stream)
    assert (info.state.messages, info.state.first_seq, info.state.last_seq) == (5, 4, 8)


async def test_duplicate_publish_is_dropped(nc: NATS, stream_prefix: str) -> None:
    """The same Nats-Msg-Id within the window is stored once; the ack says duplicate."""
    layout = Layout(stream_prefix)
    js = nc.jetstream()
    await ensure_streams(js, layout)
    hdrs = headers(kind="post", message_id=msg_id("post", "ff" * 32, 5))
    first = await publish(js, layout.ingest_subject("post"), b"{}", headers=hdrs)
    again = await publish(js, layout.ingest_subject("post"), b"{}", headers=hdrs)
    assert not first.duplicate
    assert again.duplicate
    assert (await js.stream_info(layout.ingest_stream)).state.messages == 1


async def test_incompatible_existing_stream_is_a_bus_error(nc: NATS, stream_prefix: str) -> None:
    """A stream of ours created with another retention cannot be taken over silently."""
    layout = Layout(stream_prefix)
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=layout.ingest_stream,
            subjects=[layout.ingest_subjects],
            retention=RetentionPolicy.LIMITS,
        )
    )
    with pytest.raises(BusError, match=layout.ingest_stream):
        await ensure_streams(js, layout)


async def test_blocklist_bucket_is_idempotent(nc: NATS, stream_prefix: str) -> None:
    """The block-list bucket is created once and opened afterwards; values persist."""
    layout = Layout(stream_prefix)
    js = nc.jetstream()
    kv = await ensure_blocklist(js, layout)
    await kv.put("ab" * 32, b"spam")
    again = await ensure_blocklist(js, layout)
    entry = await again.get("ab" * 32)
    assert entry.value == b"spam"
