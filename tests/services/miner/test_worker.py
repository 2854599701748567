"""The miner service, run as real processes against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from datetime import datetime
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from structlog.testing import capture_logs

from mim import canonical, verify
from mim import pow as mim_pow
from mim.create import create
from mim.signing import SigningKey
from relay.bus import Layout
from relay.mining import MiningTimeout, mine, service_minter
from tests.helpers.metrics import sample, scrape
from tests.helpers.procs import alive
from tests.services.miner.conftest import StartMiner, children

KEY = SigningKey.generate(bytes(range(32)))
POST = {"board": "b" * 64, "thread": "c" * 64, "parent": "c" * 64, "body": "mined elsewhere"}


def metrics_of(proc: Any) -> str:
    return scrape(proc.last("service_started")["metrics_url"] + "/metrics")


def jobs_of(proc: Any) -> list[str]:
    return [record["job"] for record in proc.events("job_started")]


def wall(record: dict[str, Any]) -> float:
    """The log line's timestamp as seconds since the epoch."""
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


async def ask(nc: NATS, layout: Layout, payload: bytes, wait: float = 10.0) -> dict[str, Any]:
    """Send a raw request and return the first reply that is not a progress report."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(layout.miner_request_subject, payload, reply=inbox)
        while True:
            reply: dict[str, Any] = json.loads((await sub.next_msg(timeout=wait)).data)
            if "progress" not in reply:
                return reply
    finally:
        await sub.unsubscribe()


async def test_proofs_verify_at_the_asked_difficulty(
    nc: NATS, layout: Layout, start_miner: StartMiner
) -> None:
    """Plain and split jobs come back from the service with proofs that verify at their
    difficulty, and /metrics counts them."""
    miner = start_miner(workers=2)
    text = "16hello \u00e9 world"
    for difficulty, split in ((8, False), (12, True), (16, False)):
        mined = await mine(nc, text, difficulty, timeout=30, split=split, layout=layout)
        assert mined.where == "service"
        assert mim_pow.verify(text, mined.unsigned_pow, "") == difficulty
        assert mined.attempts > 0
    finished = [miner.wait_for("job_finished", job=job, timeout=5) for job in jobs_of(miner)]
    assert len(finished) == 3
    metrics = metrics_of(miner)
    assert sample(metrics, "mim_miner_jobs_total", outcome="found") == 3
    assert (sample(metrics, "mim_miner_attempts_total") or 0) >= 3
    assert sample(metrics, "mim_miner_job_duration_seconds_count", difficulty_bucket="1-16") == 3
    assert sample(metrics, "mim_miner_jobs_in_flight") == 0
    assert sample(metrics, "mim_miner_workers") == 2


def test_signed_object_made_through_the_service_verifies(
    nats_url: str, layout: Layout, start_miner: StartMiner
) -> None:
    """A post created with the service minter carries a PoW the client signed itself, and the
    object verifies at that strength."""
    miner = start_miner()
    minter = service_minter(nats_url, timeout=30, layout=layout)
    post = create("post", POST, KEY, 12, 1_700_000_000, minter)
    verdict = verify.verify("post", canonical.encode(post), verify.Policy.uniform(12))
    assert verdict.ok, verdict.reason
    assert miner.wait_for("job_finished", outcome="found")["difficulty"] == 12


async def test_split_job_stops_the_losing_miner_within_a_second(
    nc: NATS, layout: Layout, start_miner: StartMiner
) -> None:
    """With two miners a split job is answered once, and the other miner stops searching within a
    second of the answer, counting one cancellation."""
    miners = [start_miner(), start_miner()]
    text = "a hard proof for two"
    # Both miners may find a proof in the same few milliseconds (then neither is cancelled);
    # another job makes that vanishingly unlikely to repeat.
    for _ in range(3):
        mined = await mine(nc, text, 20, timeout=60, split=True, layout=layout)
        answered = time.time()
        assert mim_pow.verify(text, mined.unsigned_pow, "") == 20
        job = miners[0].events("job_started")[-1]["job"]
        finished = [await asyncio.to_thread(m.wait_for, "job_finished", 5, job=job) for m in miners]
        if sorted(r["outcome"] for r in finished) == ["cancelled", "found"]:
            break
    [stopped] = [r for r in finished if r["outcome"] == "cancelled"]
    assert stopped["stop_latency_s"] < 1.0
    assert wall(stopped) - answered < 1.0
    loser = miners[finished.index(stopped)]
    assert sample(metrics_of(loser), "mim_miner_cancellations_total") == 1


async def test_killed_miner_mid_job_the_requester_still_gets_a_proof(
    nc: NATS, layout: Layout, start_miner: StartMiner
) -> None:
    """When the miner working on a job is killed with -9, the job is sent again and answered by
    the other miner well within its deadline, and the dead miner's search processes exit."""
    miners = [start_miner(), start_miner()]
    text = "survive a kill"
    with capture_logs() as logs:
        job = asyncio.create_task(
            mine(nc, text, 21, timeout=60, split=False, layout=layout, silence=1.0)
        )
        deadline = time.monotonic() + 10
        victim = None
        while victim is None and time.monotonic() < deadline:
            victim = next((m for m in miners if m.events("job_started")), None)
            await asyncio.sleep(0.01)
        assert victim is not None
        pool = children(victim.pid)
        victim.send(signal.SIGKILL)
        started = time.monotonic()
        mined = await asyncio.wait_for(job, 60)
    assert mim_pow.verify(text, mined.unsigned_pow, "") == 21
    if not victim.events("job_finished"):  # the usual case: it died before finding the proof
        assert mined.where == "service"
        assert any(e["event"] == "miner_silent" for e in logs)
        survivor = next(m for m in miners if m is not victim)
        survivor.wait_for("job_finished", outcome="found")
    # the job's own deadline is 60 s: the survivor answers long before (a difficulty-21 proof
    # takes a few seconds, after a 1 s silence)
    assert time.monotonic() - started < 40
    await asyncio.sleep(1.0)
    assert not [pid for pid in pool if alive(pid)], "search processes outlived their miner"


async def test_killed_only_miner_gives_a_clear_error_within_the_deadline(
    nc: NATS, layout: Layout, start_miner: StartMiner
) -> None:
    """When the only miner dies mid-job on a proof too hard for the deadline, the requester gets
    a deadline error on time, never a hang."""
    miner = start_miner()
    started = time.monotonic()
    job = asyncio.create_task(
        mine(nc, "too hard", 60, timeout=4, split=False, layout=layout, silence=1.0)
    )
    await asyncio.to_thread(miner.wait_for, "job_started", 5)
    miner.send(signal.SIGKILL)
    with pytest.raises(MiningTimeout) as caught:
        await asyncio.wait_for(job, 10)
    assert time.monotonic() - started < 5.5
    assert caught.value.rule == "miner.deadline"


TOO_LONG = b"x" * 1025
BAD_REQUESTS = [
    (b"\xff\xfe garbage", "request", "request.json"),
    (b"[1, 2]", "request", "request.json"),
    (b'{"text": "x", "difficulty": 8}', "job", "request.job"),
    (b'{"job": "j1", "text": "x", "difficulty": 0}', "difficulty", "request.difficulty"),
    (b'{"job": "j2", "text": "x", "difficulty": -1}', "difficulty", "request.difficulty"),
    (b'{"job": "j3", "text": "x", "difficulty": 257}', "difficulty", "request.difficulty"),
    (b'{"job": "j4", "text": "x", "difficulty": "18"}', "difficulty", "request.difficulty"),
    (b'{"job": "j5", "text": "x", "difficulty": true}', "difficulty", "request.difficulty"),
    (b'{"job": "j6", "text": 5, "difficulty": 8}', "text", "request.text"),
    (b'{"job": "j7", "text": "' + TOO_LONG + b'", "difficulty": 8}', "text", "request.text_size"),
    (b'{"job": "j8", "text": "", "difficulty": 8, "deadline_s": 0}', "deadline_s", "request.deadline"),  # noqa: E501
    (b'{"job": "j9", "text": "x", "difficulty": 8, "split": "yes"}', "split", "request.split"),
]  # fmt: skip


async def test_bad_requests_get_errors_naming_the_problem_and_the_miner_keeps_serving(
    nc: NATS, layout: Layout, start_miner: StartMiner
) -> None:
    """Each malformed request is answered with an error naming its field and rule; a good
    request afterwards still gets a proof."""
    miner = start_miner(MIM_MINER_MAX_TEXT_BYTES="1024")
    for payload, field, rule in BAD_REQUESTS:
        reply = await ask(nc, layout, payload)
        assert reply["error"]["field"] == field, payload
        assert reply["error"]["rule"] == rule, payload
        assert reply["error"]["detail"]
    reply = await ask(
        nc, layout, json.dumps({"job": "good", "text": "x", "difficulty": 8}).encode()
    )
    assert mim_pow.verify("x", mim_pow.unsigned(8, reply["salt"], reply["counter"]), "") == 8
    metrics = metrics_of(miner)
    assert sample(metrics, "mim_miner_jobs_total", outcome="refused") == len(BAD_REQUESTS)
    assert sample(metrics, "mim_miner_jobs_total", outcome="found") == 1


async def test_a_job_past_its_deadline_answers_with_a_deadline_error(
    nc: NATS, layout: Layout, start_miner: StartMiner
) -> None:
    """A job that cannot finish in time answers a deadline error after its limit, not later."""
    miner = start_miner(MIM_MINER_JOB_LIMIT_SECONDS="1")
    started = time.monotonic()
    request = {"job": secrets.token_hex(4), "text": "x", "difficulty": 60, "deadline_s": 30}
    reply = await ask(nc, layout, json.dumps(request).encode())
    assert 0.9 < time.monotonic() - started < 3
    assert reply["error"]["rule"] == "miner.deadline"
    assert "difficulty 60" in reply["error"]["detail"]
    assert sample(metrics_of(miner), "mim_miner_jobs_total", outcome="deadline") == 1


async def test_sigterm_mid_job_tells_the_requester_and_exits_zero(
    nc: NATS, layout: Layout, start_miner: StartMiner
) -> None:
    """On SIGTERM a miner lets its job run for the grace period, then answers `miner.shutdown`
    and exits 0."""
    miner = start_miner(MIM_MINER_SHUTDOWN_GRACE_SECONDS="0.5")
    request = {"job": secrets.token_hex(4), "text": "x", "difficulty": 60}
    reply_task = asyncio.create_task(ask(nc, layout, json.dumps(request).encode()))
    await asyncio.to_thread(miner.wait_for, "job_started", 5)
    miner.terminate()
    reply = await asyncio.wait_for(reply_task, 10)
    assert reply["error"]["rule"] == "miner.shutdown"
    assert await asyncio.to_thread(miner.wait, 15) == 0
    assert miner.last("shutdown_complete")["exit_code"] == 0


async def test_a_busy_miner_does_not_stop_a_split_job_the_others_can_take(
    nc: NATS, layout: Layout, start_miner: StartMiner
) -> None:
    """A miner at its job limit answers `miner.busy`; a split job is still answered by a free
    miner, and with only busy miners it is mined in-process."""
    busy = start_miner(MIM_MINER_MAX_JOBS="1")
    hog = {"job": secrets.token_hex(4), "text": "x", "difficulty": 60, "deadline_s": 20}
    hogging = asyncio.create_task(ask(nc, layout, json.dumps(hog).encode(), wait=30))
    await asyncio.to_thread(busy.wait_for, "job_started", 5)
    with capture_logs() as logs:
        alone = await mine(nc, "busy", 12, timeout=20, split=True, layout=layout, silence=1.0)
    assert alone.where == "local"
    assert any("miner.busy" in e.get("reason", "") for e in logs)
    start_miner()
    mined = await mine(nc, "busy", 12, timeout=20, split=True, layout=layout, silence=1.0)
    assert mined.where == "service"
    assert mim_pow.verify("busy", mined.unsigned_pow, "") == 12
    for _ in range(50):  # its log lines are read by another thread
        if len(busy.events("job_refused")) == 2:
            break
        await asyncio.sleep(0.1)
    assert [r["outcome"] for r in busy.events("job_refused")] == ["busy", "busy"]
    hogging.cancel()
    await asyncio.gather(hogging, return_exceptions=True)
