"""The ingest path end to end: submit → 3 validator processes → store process → PostgreSQL.

Sizes are settings of the test: ``MIM_E2E_OBJECTS`` (default 5000) objects in the undisturbed
run, ``MIM_E2E_KILL_OBJECTS`` (default 20000) in each run where a process is killed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any, cast

import asyncpg
import nats
import pytest
from nats.js import JetStreamContext

from mim import canonical, verify
from mim import pow as mim_pow
from mim.create import create, update
from mim.entities import Provable
from mim.signing import SigningKey
from relay.bus import Layout, StreamLimits, ensure_streams
from relay.submit import submit
from tests.helpers.objects import signed_posts
from tests.helpers.pipeline import wait_drained
from tests.helpers.procs import ServiceProcess
from tests.vectors import section

DIFFICULTY = 6
POLICY = verify.Policy.uniform(DIFFICULTY)
KEY = SigningKey.generate(bytes(range(40, 72)))
OTHER = SigningKey.generate(bytes(range(80, 112)))
NOW = 1_700_000_000
OBJECTS = int(os.environ.get("MIM_E2E_OBJECTS", "5000"))
KILL_OBJECTS = int(os.environ.get("MIM_E2E_KILL_OBJECTS", "20000"))

pytestmark = pytest.mark.slow


def _posts(count: int, seed: int) -> list[Provable]:
    return signed_posts(count, seed, key=KEY, difficulty=DIFFICULTY, start=NOW, label=str(seed))


def _update_cases() -> list[tuple[str, bytes]]:
    """An original, a newer update sent first, an older one after it, an update by another key,
    and an update of an anonymous object."""
    mint = mim_pow.local_minter(random.Random(5).randrange)
    thread = create("thread", {"board": "b" * 64, "name": "updates"}, KEY, DIFFICULTY, NOW, mint)
    older = update(thread, {"body": "older"}, KEY, DIFFICULTY, NOW + 10, mint)
    newer = update(thread, {"body": "newer"}, KEY, DIFFICULTY, NOW + 20, mint)
    thread_any: Any = thread
    as_other = dataclasses.replace(thread_any, owner_publickey=OTHER.public_hex)
    forged = update(as_other, {"body": "forged"}, OTHER, DIFFICULTY, NOW + 30, mint)
    forged = dataclasses.replace(cast(Any, forged), owner_publickey=thread_any.owner_publickey)
    anonymous = create("post", {"board": "b" * 64, "thread": "c" * 64, "parent": "c" * 64,
                                "body": "anon"}, None, DIFFICULTY, NOW, mint)  # fmt: skip
    anon_update = dataclasses.replace(
        cast(Any, anonymous), body="changed", last_update=NOW + 5,
        update_proof_of_work=newer.update_proof_of_work, update_signature="ab" * 64,
    )  # fmt: skip
    made = [thread, newer, older, forged, anon_update]
    return [(o.kind, canonical.encode(o)) for o in made]


def _workload(total: int, seed: int) -> list[tuple[str, bytes]]:
    cases = [(c["entity_type"], c["object_json"].encode()) for c in section("entities")]
    cases += [(c["entity_type"], c["object_json"].encode()) for c in section("negative_cases")]
    cases += _update_cases()
    cases += [("post", canonical.encode(p)) for p in _posts(max(0, total - len(cases)), seed)]
    return cases


def _expected(cases: list[tuple[str, bytes]]) -> tuple[dict[tuple[str, str], int], Counter[Any]]:
    """What the node must hold, (kind, fingerprint) -> last_update, and the rejections by stage."""
    held: dict[tuple[str, str], tuple[int, int]] = {}
    stages: Counter[Any] = Counter()
    for kind, raw in cases:
        verdict = verify.verify(kind, raw, POLICY)
        if not verdict.ok:
            stages[(kind, verdict.stage)] += 1
            continue
        entity = verdict.entity
        assert entity is not None
        creation = getattr(entity, "creation", 0)
        key = (kind, verdict.fingerprint)
        lu = verdict.last_update
        current = held.get(key)
        if current is None:
            if lu == 0 or lu > creation:
                held[key] = (lu, creation)
        elif lu > current[0] and lu > current[1]:
            held[key] = (lu, creation)
    return {k: v[0] for k, v in held.items()}, stages


class Node:
    """3 validators and 1 store, real subprocesses, on the test's servers and stream prefix."""

    def __init__(self, nats_url: str, database_url: str, prefix: str) -> None:
        self.env = {
            "MIM_NATS_URL": nats_url,
            "MIM_DATABASE_URL": database_url,
            "MIM_STREAM_PREFIX": prefix,
            "MIM_MIN_POW": str(DIFFICULTY),
            "MIM_VALIDATOR_METRICS_PORT": "0",
            "MIM_VALIDATOR_RETRY_DELAY_SECONDS": "0.2",
            "MIM_STORE_METRICS_PORT": "0",
            "MIM_DEDUPE_WINDOW_SECONDS": "120",
        }
        self.stack = ExitStack()
        self.validators: list[ServiceProcess] = []

    def start_validator(self) -> ServiceProcess:
        proc = self.stack.enter_context(ServiceProcess(["-m", "services.validator"], self.env))
        self.validators.append(proc)
        return proc

    def start_store(self) -> ServiceProcess:
        self.store = self.stack.enter_context(ServiceProcess(["-m", "services.store"], self.env))
        return self.store

    def __enter__(self) -> Node:
        self.start_store()
        for _ in range(3):
            self.start_validator()
        for proc in [self.store, *self.validators]:
            proc.wait_for("service_ready", timeout=60)
        return self

    def stop(self) -> list[int]:
        procs = [p for p in [*self.validators, self.store] if p.proc.poll() is None]
        for proc in procs:
            proc.terminate()
        return [proc.wait(30) for proc in procs]

    def __exit__(self, *exc: object) -> None:
        self.stack.close()


@pytest.fixture
def node(nats_url: str, fresh_database: str, stream_prefix: str) -> Iterator[Node]:
    with Node(nats_url, fresh_database, stream_prefix) as running:
        yield running


async def _submit_all(js: JetStreamContext, layout: Layout, cases: list[tuple[str, bytes]]) -> None:
    sem = asyncio.Semaphore(256)

    async def one(kind: str, raw: bytes) -> None:
        async with sem:
            await submit(js, layout, kind, raw, ack_wait_seconds=30)

    await asyncio.gather(*(one(k, r) for k, r in cases))


async def _rejections(js: JetStreamContext, layout: Layout) -> list[dict[str, Any]]:
    sub = await js.pull_subscribe(layout.rejected_subjects, stream=layout.rejected_stream)
    out: list[dict[str, Any]] = []
    while True:
        try:
            batch = await sub.fetch(512, timeout=1)
        except (nats.errors.TimeoutError, TimeoutError):
            break
        out += [json.loads(m.data) for m in batch]
    await sub.unsubscribe()
    return out


async def _held(db: str) -> dict[tuple[str, str], int]:
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch("SELECT kind, fingerprint, last_update, body FROM objects")
    finally:
        await conn.close()
    return {(r["kind"], r["fingerprint"]): r["last_update"] for r in rows}


async def _run(
    node: Node, nats_url: str, db: str, prefix: str, cases: Any, kill: str | None
) -> None:
    """Submit ``cases``; with ``kill`` ("validator" or "store") that process is killed with
    SIGKILL a third of the way in and a new one started."""
    held, stages = _expected(cases)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        layout = Layout(prefix)
        await ensure_streams(js, layout, StreamLimits(duplicate_window_seconds=120))
        bad = [
            ("post", b"\x00\x01 garbage"),
            ("post", canonical.encode(_posts(1, 99)[0]).replace(b'"body"', b'"bodx"', 1)),
            ("post", b'{"body":"' + b"x" * (10 << 20) + b'"}'),
        ]
        if kill:
            third = len(cases) // 3
            await _submit_all(js, layout, cases[:third])
            victim = node.validators[0] if kill == "validator" else node.store
            await asyncio.sleep(0.5)
            os.kill(victim.pid, signal.SIGKILL)
            await _submit_all(js, layout, cases[third:])
            replacement = node.start_validator() if kill == "validator" else node.start_store()
            replacement.wait_for("service_ready", timeout=60)
        else:
            await _submit_all(js, layout, bad[:1] + cases + bad[1:])
            await js.publish(layout.ingest_subject("nonsense"), b"{}")
        bad_count = 0 if kill else 4
        await wait_drained(
            js, layout, db, stored=len(held), rejected=sum(stages.values()) + bad_count, limit=300
        )
        stored = await _held(db)
        missing = {k: v for k, v in held.items() if stored.get(k) != v}
        extra = {k: v for k, v in stored.items() if k not in held}
        assert (len(stored), missing, extra) == (len(held), {}, {})
        rejected = await _rejections(js, layout)
        got = Counter((r["kind"], r["stage"]) for r in rejected)
        if not kill:
            for key in [("post", "decode"), ("post", "size"), ("unknown", "decode")]:
                assert got[key] >= 1, key
            got -= Counter({("post", "decode"): 1, ("post", "size"): 1, ("unknown", "decode"): 1})
            got -= Counter({("post", "bounds"): 1})  # the renamed field leaves the body empty
            big = next(r for r in rejected if r["stage"] == "size")
            assert big["size"] > 10 << 20 and "MAX_OBJECT_BYTES" in big["reason"]
        assert sorted((got - stages).items()) == [] and sorted((stages - got).items()) == []
        assert len({r["ingest_sequence"] for r in rejected}) == len(rejected)  # none doubled
    finally:
        await nc.close()


async def test_every_object_is_stored_or_rejected_exactly_once(
    node: Node, nats_url: str, fresh_database: str, stream_prefix: str
) -> None:
    """Vectors, negative cases, update cases, bad messages and fresh posts go through three
    validator processes and a store: the database holds exactly the accepted set at its newest
    versions, every rejection is on the rejected stream once with the core's stage, and every
    process exits 0 on SIGTERM."""
    cases = _workload(OBJECTS, seed=1)
    await _run(node, nats_url, fresh_database, stream_prefix, cases, kill=None)
    thread_rows = await _bodies(fresh_database, "thread")
    assert any('"body":"newer"' in b for b in thread_rows)
    assert not any('"older"' in b or '"forged"' in b for b in thread_rows)
    assert node.stop() == [0, 0, 0, 0]


async def _bodies(db: str, kind: str) -> list[str]:
    conn = await asyncpg.connect(db)
    try:
        return [r["body"] for r in await conn.fetch("SELECT body FROM objects WHERE kind=$1", kind)]
    finally:
        await conn.close()


@pytest.mark.parametrize("victim", ["validator", "store"])
async def test_a_process_killed_mid_run_loses_and_doubles_nothing(
    node: Node, nats_url: str, fresh_database: str, stream_prefix: str, victim: str
) -> None:
    """With a validator, or the store writer, killed by SIGKILL mid-run and a new one started,
    the database ends exactly as an undisturbed run would leave it and no rejection is recorded
    twice."""
    cases = _workload(KILL_OBJECTS, seed=2)
    await _run(node, nats_url, fresh_database, stream_prefix, cases, kill=victim)
