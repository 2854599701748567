"""The validator against a real nats-server: verdicts, rejections, block list, bounded retries."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PubAck
from prometheus_client import REGISTRY
from services.validator.blocklist import BlockList
from services.validator.settings import ValidatorSettings
from services.validator.worker import Validator, ack_numbers

from mim import verify
from mim.entities import Address
from relay import SettingsError
from relay.bus import Layout, ensure_blocklist
from relay.first_party import FIRST_PARTY, Sighting, report, sighting
from relay.puller import Puller
from relay.settings import load
from relay.submit import submit
from services.store import blocks as store_blocks
from tests.helpers.procs import ServiceProcess
from tests.services.validator.helpers import (
    DIFFICULTY,
    fingerprints,
    make_post,
    read_accepted,
    read_rejected,
    wire,
)
from tests.vectors import section

POLICY = verify.Policy.uniform(DIFFICULTY)


def settings_for(layout: Layout, nats_url: str = "", **extra: Any) -> ValidatorSettings:
    values: dict[str, Any] = {
        "stream_prefix": layout.prefix,
        "min_pow": DIFFICULTY,
        "retry_delay_seconds": 0,
        **extra,
    }
    if nats_url:
        values["nats_url"] = nats_url
    return load(ValidatorSettings, **values)


class Harness:
    """A validator in this process, fed by hand from the durable consumer."""

    def __init__(self, nc: NATS, layout: Layout, settings: ValidatorSettings) -> None:
        self.js: JetStreamContext = nc.jetstream()
        self.layout = layout
        self.blocks = BlockList()
        self.stop = asyncio.Event()
        self.validator = Validator(nc, layout, settings, self.blocks)

    async def start(self) -> None:
        kv = await ensure_blocklist(self.js, self.layout)
        self.task = asyncio.create_task(self.blocks.run(kv, self.stop, 1.0))
        await asyncio.wait_for(self.blocks.loaded.wait(), 10)
        self.sub = await self.js.pull_subscribe_bind(
            durable=self.layout.validator_consumer, stream=self.layout.ingest_stream
        )

    async def run_until_idle(self, limit_seconds: float = 60.0) -> None:
        async def loop() -> None:
            while True:
                try:
                    msgs = await self.sub.fetch(64, timeout=0.5)
                except (nats.errors.TimeoutError, TimeoutError):
                    info = await self.js.stream_info(self.layout.ingest_stream)
                    if info.state.messages == 0:
                        return
                    continue
                await self.validator.handle(msgs)

        await asyncio.wait_for(loop(), limit_seconds)

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)
        await self.validator.aclose()


@pytest.fixture
async def harness(nc: NATS, layout: Layout) -> AsyncIterator[Harness]:
    h = Harness(nc, layout, settings_for(layout, max_object_bytes=200_000))
    await h.start()
    yield h
    await h.close()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_vectors_are_judged_like_the_core_and_land_on_their_streams(
    harness: Harness,
) -> None:
    """Every reference vector and negative case ends on the accepted stream or on the rejected
    stream at the stage ``mim.verify`` names, exactly once each."""
    cases = [(c["entity_type"], c["object_json"].encode()) for c in section("entities")]
    cases += [(c["entity_type"], c["object_json"].encode()) for c in section("negative_cases")]
    expected_ok: set[str] = set()
    expected_stages: list[tuple[str, str]] = []
    for kind, raw in cases:
        verdict = verify.verify(kind, raw, POLICY)
        if verdict.ok:
            expected_ok.add(f"{kind}:{verdict.fingerprint}:{verdict.last_update}")
        else:
            expected_stages.append((kind, verdict.stage))
    before = sample("mim_validator_rejections_total", kind="board", stage="fingerprint")
    for kind, raw in cases:
        await submit(harness.js, harness.layout, kind, raw)
    await harness.run_until_idle()

    accepted = await read_accepted(harness.js, harness.layout)
    ids = [m.headers["Nats-Msg-Id"] for m in accepted if m.headers]
    assert sorted(ids) == sorted(expected_ok)
    rejected = await read_rejected(harness.js, harness.layout)
    assert sorted((r["kind"], r["stage"]) for r in rejected) == sorted(expected_stages)
    assert all(r["reason"] and r["field"] for r in rejected)
    board_fp = sum(1 for k, s in expected_stages if (k, s) == ("board", "fingerprint"))
    after = sample("mim_validator_rejections_total", kind="board", stage="fingerprint")
    assert after - before == board_fp


async def test_bad_messages_are_rejected_with_reasons_and_do_not_stall(
    harness: Harness,
) -> None:
    """Garbage bytes, an unknown kind, a post sent as a board and an oversize payload are each
    rejected with a stage and a reason, and the good object behind them is accepted."""
    js, layout = harness.js, harness.layout
    good = make_post(1)
    await js.publish(layout.ingest_subject("post"), b"\x00\xffnot json{")
    await js.publish(layout.ingest_subject("nonsense"), wire(good))
    await js.publish(layout.ingest_subject("board"), wire(make_post(2)))
    await js.publish(layout.ingest_subject("post"), b'{"body":"' + b"x" * 300_000 + b'"}')
    await submit(js, layout, "post", wire(good))
    await harness.run_until_idle()

    rejected = await read_rejected(js, layout)
    by_subject = {(r["subject"].rsplit(".", 1)[-1], r["stage"]) for r in rejected}
    assert by_subject == {("post", "decode"), ("nonsense", "decode"), ("board", "bounds"),
                          ("post", "size")}  # fmt: skip
    size = next(r for r in rejected if r["stage"] == "size")
    assert "MIM_VALIDATOR_MAX_OBJECT_BYTES" in size["reason"] and size["truncated"]
    unknown = next(r for r in rejected if r["kind"] == "unknown")
    assert "nonsense" in unknown["reason"] and unknown["field"] == "kind"
    assert fingerprints(await read_accepted(js, layout)) == [good.fingerprint]


async def test_reloading_the_block_list_leaves_no_idle_consumers_behind(
    nc: NATS, layout: Layout
) -> None:
    """Each reload of the block list is a new watch, a consumer on the server; those let go are
    removed within the reload period, so a validator that runs for days keeps one or two there,
    not one per reload of the last five minutes."""
    js = nc.jetstream()
    kv = await ensure_blocklist(js, layout)
    blocks, stop = BlockList(), asyncio.Event()
    task = asyncio.create_task(blocks.run(kv, stop, 1.0))
    try:
        await asyncio.wait_for(blocks.loaded.wait(), 5)
        await asyncio.sleep(10)  # nine or ten reloads
        consumers = await js.consumers_info(f"KV_{layout.blocklist_bucket}")
    finally:
        stop.set()
        await task
    assert 1 <= len(consumers) <= 4, [c.name for c in consumers]


async def test_blocked_objects_and_their_descendants_are_refused_until_unblocked(
    harness: Harness, fresh_database: str
) -> None:
    """A blocked thread refuses its posts at stage ``blocked`` within seconds, no restart; after
    ``unblock`` the same thread's posts are accepted again."""
    js, layout = harness.js, harness.layout
    kv = await ensure_blocklist(js, layout)
    conn = await asyncpg.connect(fresh_database)
    thread = "d" * 64
    try:
        assert await store_blocks.add(conn, kv, thread.upper(), "spam thread")
        await asyncio.wait_for(_until(lambda: harness.blocks.match([thread])), 5)
        other, again = make_post(4), make_post(5, thread=thread)
        await submit(js, layout, "post", wire(make_post(3, thread=thread)))
        await submit(js, layout, "post", wire(other))
        await harness.run_until_idle()
        rejected = await read_rejected(js, layout)
        assert [(r["stage"], r["rule"]) for r in rejected] == [("blocked", "blocklist")]
        assert "spam thread" in rejected[0]["reason"]
        assert fingerprints(await read_accepted(js, layout)) == [other.fingerprint]

        assert await store_blocks.remove(conn, kv, thread)
        await asyncio.wait_for(_until(lambda: not harness.blocks.match([thread])), 5)
        await submit(js, layout, "post", wire(again))
        await harness.run_until_idle()
        assert fingerprints(await read_accepted(js, layout)) == [again.fingerprint]
    finally:
        await conn.close()


async def _until(check: Any) -> None:
    while not check():  # noqa: ASYNC110 - the value is set by the block list's own task
        await asyncio.sleep(0.05)


async def test_a_message_is_rejected_after_its_delivery_budget(nc: NATS, layout: Layout) -> None:
    """A message redelivered more than ``max_deliveries`` times is rejected at stage
    ``delivery`` and removed instead of being retried for ever."""
    h = Harness(nc, layout, settings_for(layout, max_deliveries=2))
    await h.start()
    try:
        await submit(h.js, layout, "post", wire(make_post(6)))
        for _ in range(2):  # two deliveries that fail (left unacked, handed back)
            (msg,) = await h.sub.fetch(1, timeout=5)
            await msg.nak()
        await h.run_until_idle()
        rejected = await read_rejected(h.js, layout)
        assert [(r["stage"], r["deliveries"]) for r in rejected] == [("delivery", 3)]
        assert await read_accepted(h.js, layout) == []
    finally:
        await h.close()


async def _fill_accepted(h: Harness) -> PubAck:
    """Leave room for one message on the accepted stream, and take it: the store is down."""
    info = await h.js.stream_info(h.layout.accepted_stream)
    info.config.max_msgs = 1
    await h.js.update_stream(info.config)
    return await h.js.publish(h.layout.accepted_subject("post"), wire(make_post(1)))


async def test_a_sound_object_outlasts_a_full_accepted_stream(nc: NATS, layout: Layout) -> None:
    """While the accepted stream is full (the store down), a validator holds what it judged and
    tries again, however many times its delivery budget would allow: nothing is rejected at
    stage ``delivery``, and once there is room the object is accepted, once."""
    h = Harness(nc, layout, settings_for(layout, max_deliveries=2, retry_delay_seconds=0.1))
    await h.start()
    try:
        filler = await _fill_accepted(h)
        post = make_post(7)
        await submit(h.js, layout, "post", wire(post))
        held = sample("mim_validator_retries_total", cause="publish")
        running = asyncio.create_task(h.run_until_idle())
        await asyncio.sleep(4.0)  # about 6 tries at 0.1, 0.2, 0.4, ... s
        assert not running.done()
        assert await read_rejected(h.js, layout) == []
        assert sample("mim_validator_retries_total", cause="publish") - held >= 4
        await h.js.delete_msg(layout.accepted_stream, filler.seq)  # the store took it
        await asyncio.wait_for(running, 30)
        assert fingerprints(await read_accepted(h.js, layout)) == [post.fingerprint]
        assert await read_rejected(h.js, layout) == []
        assert (await h.js.stream_info(layout.ingest_stream)).state.messages == 0
    finally:
        await h.close()


async def test_a_held_message_is_handed_back_at_once_on_stop(nc: NATS, layout: Layout) -> None:
    """A validator told to stop while it holds messages gives them back for the next replica
    instead of waiting out its delay; they come back delivered once more, and are still there."""
    h = Harness(nc, layout, settings_for(layout, retry_delay_seconds=60))
    await h.start()
    try:
        await _fill_accepted(h)
        await submit(h.js, layout, "post", wire(make_post(8)))
        (msg,) = await h.sub.fetch(1, timeout=5)
        holding = asyncio.create_task(h.validator.handle([msg]))
        await asyncio.sleep(0.5)
        assert not holding.done()
        h.validator.stop.set()
        await asyncio.wait_for(holding, 5)
        (again,) = await h.sub.fetch(1, timeout=5)
        assert ack_numbers(again)[:2] == (ack_numbers(msg)[0], 2)
        await again.nak()
        assert await read_rejected(h.js, layout) == []
    finally:
        await h.close()


async def test_the_service_runs_as_a_process_and_drains_on_sigterm(
    nats_url: str, nc: NATS, layout: Layout
) -> None:
    """``python -m services.validator`` becomes ready, accepts an object (its /metrics says
    so), and exits 0 on SIGTERM."""
    env = {
        "MIM_NATS_URL": nats_url,
        "MIM_STREAM_PREFIX": layout.prefix,
        "MIM_MIN_POW": str(DIFFICULTY),
        "MIM_VALIDATOR_METRICS_PORT": "0",
    }
    with ServiceProcess(["-m", "services.validator"], env=env) as proc:
        started = proc.wait_for("service_started")
        proc.wait_for("service_ready")
        js = nc.jetstream()
        post = make_post(7)
        await submit(js, layout, "post", wire(post))
        metrics_url = started["metrics_url"] + "/metrics"
        line = 'mim_validator_objects_total{kind="post",outcome="accepted"} 1.0'
        for _ in range(100):
            text = await asyncio.to_thread(_get, metrics_url)
            if line in text:
                break
            await asyncio.sleep(0.1)
        assert line in text
        proc.terminate()
        assert await asyncio.to_thread(proc.wait, 30) == 0
        assert proc.last("shutdown_complete")["accepted"] == 1
    assert fingerprints(await read_accepted(js, layout)) == [post.fingerprint]


def _get(url: str) -> str:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
        return str(resp.read().decode())
    return ""


def test_policy_settings_map_to_the_core_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """``MIM_MIN_POW`` sets every kind, ``MIM_MIN_POW_<KIND>`` and ``MIM_MIN_UPDATE_POW`` override
    it, and a bad value names its variable."""
    s = load(ValidatorSettings, min_pow=9, min_pow_vote=4, min_update_pow=12)
    policy = s.policy()
    assert policy.min_pow["post"] == 9 and policy.min_pow["vote"] == 4
    assert policy.min_update_pow["vote"] == 12 and policy.min_update_pow["key"] == 12
    monkeypatch.setenv("MIM_MIN_POW_POST", "300")
    with pytest.raises(SettingsError, match=r"MIM_MIN_POW_POST='300'.*less than or equal to 256"):
        load(ValidatorSettings)


async def test_ack_numbers_read_the_reply_subject_as_nats_py_does(nc: NATS, layout: Layout) -> None:
    """Stream sequence, delivery count and pending count, read from the reply subject, agree
    with nats-py's metadata on real deliveries, redeliveries, and the domain form."""
    js = nc.jetstream()
    for n in range(3):
        await submit(js, layout, "post", f"not an object {n}".encode())
    puller = await Puller(nc, layout.ingest_stream, layout.validator_consumer, batch=2).start()
    first = await puller.take(3, 5)
    await first[0].nak()
    later = first[1:] + await puller.take(3, 5)
    while len(later) < 3:
        later += await puller.take(3, 5)
    await puller.close()
    for msg in first + later:
        meta = msg.metadata
        assert ack_numbers(msg) == (meta.sequence.stream, meta.num_delivered, meta.num_pending)
    assert max(ack_numbers(m)[1] for m in later) == 2  # the nak'd one came back
    domain = Msg(
        nc, subject="x", reply="$JS.ACK.hub.ACCHASH.S.C.3.41.40.1700000000000000000.7.r4nd"
    )
    assert ack_numbers(domain) == (41, 3, 7)
    assert (domain.metadata.sequence.stream, domain.metadata.num_delivered) == (41, 3)


async def test_a_first_party_address_goes_on_with_its_times(harness: Harness) -> None:
    """An address reported first-party is checked like any address and reaches the accepted stream
    marked first-party with its ping and sync times; the same report again is queued once, a
    later ping is queued anew."""
    js, layout = harness.js, harness.layout
    address = Address(location="203.0.113.7", port=8090, location_type=4, type=2, entity_version=1)
    await report(js, layout, address, last_ping=1_700_000_000)
    await report(js, layout, address, last_ping=1_700_000_000)
    await report(js, layout, address, last_ping=1_700_000_060)
    await harness.run_until_idle()
    accepted = await read_accepted(js, layout)
    marks = [sighting(m.headers) for m in accepted]
    assert marks == [Sighting(1_700_000_000, 0), Sighting(1_700_000_060, 0)]
    assert all(m.headers and m.headers["Mim-Source"] == FIRST_PARTY for m in accepted)
