"""Objects and stream readers shared by the validator tests."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from mim import canonical
from mim import pow as mim_pow
from mim.create import create
from mim.entities import Provable
from mim.signing import SigningKey
from relay.bus import Layout

DIFFICULTY = 6
NOW = 1_700_000_000
KEY = SigningKey.generate(bytes(range(32)))
OTHER = SigningKey.generate(bytes(range(1, 33)))
MINT = mim_pow.local_minter(random.Random(11).randrange)


def make_post(n: int, *, thread: str = "c" * 64, key: SigningKey | None = KEY) -> Provable:
    values = {"board": "b" * 64, "thread": thread, "parent": thread, "body": f"post {n}"}
    return create("post", values, key, DIFFICULTY, NOW + n, MINT)


def wire(obj: Provable) -> bytes:
    return canonical.encode(obj)


async def read_all(
    js: JetStreamContext, stream: str, subjects: str, *, durable: str | None = None
) -> list[Msg]:
    """Every message now on ``stream`` (through ``durable`` when given, acking them)."""
    if durable is not None:
        sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
    else:
        sub = await js.pull_subscribe(subjects, stream=stream)
    out: list[Msg] = []
    while True:
        try:
            batch = await sub.fetch(256, timeout=0.5)
        except (nats.errors.TimeoutError, TimeoutError):
            break
        for msg in batch:
            if durable is not None:
                await msg.ack()
        out.extend(batch)
    await sub.unsubscribe()
    return out


async def read_rejected(js: JetStreamContext, layout: Layout) -> list[dict[str, Any]]:
    msgs = await read_all(js, layout.rejected_stream, layout.rejected_subjects)
    return [json.loads(m.data) for m in msgs]


async def read_accepted(js: JetStreamContext, layout: Layout) -> list[Msg]:
    return await read_all(js, layout.accepted_stream, "", durable=layout.store_consumer)


def fingerprints(msgs: Iterable[Msg]) -> list[str]:
    return [json.loads(m.data)["fingerprint"] for m in msgs]
