"""``POST /api/submit`` and ``GET /api/objects/...``: objects are judged by the node's policy,
valid ones reach the ingest stream, rejected ones are answered with their verdict and stay out,
and an author can poll for the stored object."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from services.gateway.submissions import INLINE_VERIFY_MAX

from mim import canonical, create
from mim.entities import Provable
from relay.bus import ensure_streams
from tests.services.gateway.conftest import AUTHOR, MINT, Running, make, store


def _item(obj: Provable, **changes: Any) -> dict[str, Any]:
    return {"kind": obj.kind, "object": {**json.loads(canonical.dumps(obj)), **changes}}


async def _queued(running: Running) -> list[bytes]:
    """The ingest stream's messages, oldest first."""
    gw = running.gateway
    assert gw.nc is not None
    js = gw.nc.jetstream()
    info = await js.stream_info(gw.layout.ingest_stream)
    if not info.state.messages:
        return []
    seqs = range(info.state.first_seq, info.state.last_seq + 1)
    return [(await js.get_msg(gw.layout.ingest_stream, seq)).data or b"" for seq in seqs]


async def _streams(running: Running) -> None:
    assert running.gateway.nc is not None
    await ensure_streams(running.gateway.nc.jetstream(), running.gateway.layout)


async def test_submitted_object_lands_on_the_ingest_stream(running: Running) -> None:
    """A valid board is answered 202 with its fingerprint and an ok verdict, and its canonical
    bytes are on the ingest stream; an object that does not decode is a 400 naming the rule."""
    await _streams(running)
    board = make("board", {"name": "submitted"}, int(time.time()))
    async with httpx.AsyncClient(base_url=running.local) as client:
        answer = await client.post("/api/submit", json=[_item(board)])
        assert answer.status_code == 202, answer.text
        (receipt,) = answer.json()["queued"]
        assert receipt["fingerprint"] == board.fingerprint
        assert receipt["id"].startswith(f"board:{board.fingerprint}:0:")
        assert receipt["verdict"] == {
            "ok": True,
            "stage": "",
            "reason": "",
            "field": "",
            "rule": "",
        }
        garbage = await client.post(
            "/api/submit", json={"kind": "board", "object": {"creation": "yesterday"}}
        )
        assert garbage.status_code == 400
        assert garbage.json()["error"]["rule"]
        schema = (await client.get("/openapi.json")).json()
        assert "/api/submit" in schema["paths"]
        verdict = schema["components"]["schemas"]["ObjectVerdict"]
        assert set(verdict["properties"]) == {"ok", "stage", "reason", "field", "rule"}
    queued = await _queued(running)
    assert queued == [canonical.encode(board)]


async def test_object_sent_in_another_key_order_is_queued_canonical(running: Running) -> None:
    """The fields of an object may come in any order; what is queued is its canonical JSON."""
    await _streams(running)
    thread = make("thread", {"board": "b" * 64, "name": "reordered"}, int(time.time()))
    fields = json.loads(canonical.dumps(thread))
    shuffled = {"kind": "thread", "object": dict(reversed(fields.items()))}
    async with httpx.AsyncClient(base_url=running.local) as client:
        answer = await client.post("/api/submit", json=shuffled)
    assert answer.status_code == 202, answer.text
    assert answer.json()["queued"][0]["fingerprint"] == thread.fingerprint
    assert await _queued(running) == [canonical.encode(thread)]


async def test_tampered_object_alone_gets_422_and_is_not_queued(running: Running) -> None:
    """A board whose name was changed after signing is answered 422 with the fingerprint stage,
    field and rule in its receipt, and nothing reaches the ingest stream."""
    await _streams(running)
    board = make("board", {"name": "original"}, int(time.time()))
    async with httpx.AsyncClient(base_url=running.local) as client:
        answer = await client.post("/api/submit", json=_item(board, name="tampered"))
    assert answer.status_code == 422, answer.text
    (receipt,) = answer.json()["queued"]
    assert receipt["fingerprint"] == board.fingerprint
    assert receipt["id"] == ""
    verdict = receipt["verdict"]
    assert verdict["ok"] is False
    assert verdict["stage"] == "fingerprint"
    assert verdict["field"] == "board.fingerprint"
    assert verdict["rule"] and verdict["reason"]
    queued = await _queued(running)
    assert queued == []


async def test_mixed_batch_queues_only_the_valid_objects(running: Running) -> None:
    """A batch of a valid post, a tampered one and one with too little work is answered 202 with
    a verdict per object in order, and only the valid post is queued."""
    await _streams(running)
    now = int(time.time())
    board = make("board", {"name": "mixed"}, now - 10)
    thread = make("thread", {"board": board.fingerprint, "name": "mixed thread"}, now - 9)
    where = {"board": board.fingerprint, "thread": thread.fingerprint}
    good = make("post", {**where, "body": "good"}, now - 5)
    tampered = make("post", {**where, "body": "before"}, now - 4)
    weak = create.create("post", {**where, "body": "weak"}, AUTHOR, 1, now - 3, MINT)
    body = [_item(good), _item(tampered, body="after"), _item(weak)]
    async with httpx.AsyncClient(base_url=running.local) as client:
        answer = await client.post("/api/submit", json=body)
    assert answer.status_code == 202, answer.text
    receipts = answer.json()["queued"]
    assert [r["fingerprint"] for r in receipts] == [
        good.fingerprint,
        tampered.fingerprint,
        weak.fingerprint,
    ]
    assert [r["verdict"]["ok"] for r in receipts] == [True, False, False]
    assert [r["verdict"]["stage"] for r in receipts] == ["", "signature", "pow"]
    assert receipts[2]["verdict"]["field"] == "post.proof_of_work"
    assert [bool(r["id"]) for r in receipts] == [True, False, False]
    queued = await _queued(running)
    assert queued == [canonical.encode(good)]


async def test_large_batch_is_judged_and_queued_whole(running: Running) -> None:
    """A batch larger than what is verified on the event loop gets a verdict for every object,
    one rejection among them, and queues all the others."""
    await _streams(running)
    now = int(time.time())
    boards = [make("board", {"name": f"bulk {n}"}, now - n) for n in range(INLINE_VERIFY_MAX + 8)]
    body = [_item(b) for b in boards]
    body[7] = _item(boards[7], name="changed")
    async with httpx.AsyncClient(base_url=running.local, timeout=30) as client:
        answer = await client.post("/api/submit", json=body)
    assert answer.status_code == 202, answer.text
    oks = [r["verdict"]["ok"] for r in answer.json()["queued"]]
    assert oks == [n != 7 for n in range(len(boards))]
    queued = await _queued(running)
    assert queued == [canonical.encode(b) for n, b in enumerate(boards) if n != 7]


async def test_polling_finds_the_object_once_it_is_stored(running: Running) -> None:
    """Polling a submitted board answers 404 until the store holds it, then 200 with the stored
    canonical object and its last update."""
    await _streams(running)
    now = int(time.time())
    board = make("board", {"name": "polled"}, now)
    path = f"/api/objects/board/{board.fingerprint}"
    async with httpx.AsyncClient(base_url=running.local) as client:
        assert (await client.post("/api/submit", json=_item(board))).status_code == 202
        before = await client.get(path)
        await store(running.settings.database_url, [board], now)
        after = await client.get(path)
    assert before.status_code == 404
    assert before.json()["error"]["field"] == "fingerprint"
    assert before.json()["error"]["rule"] == "object.not_stored"
    assert after.status_code == 200, after.text
    assert after.json() == {
        "kind": "board",
        "fingerprint": board.fingerprint,
        "last_update": 0,
        "object": json.loads(canonical.dumps(board)),
    }
    assert canonical.encode(board).decode() in after.text


async def test_polling_refuses_what_cannot_be_an_object(running: Running) -> None:
    """An unknown kind is a 400 naming `kind`, a fingerprint over 64 bytes a 422 naming
    FINGERPRINT_MAX; neither is a 5xx."""
    async with httpx.AsyncClient(base_url=running.local) as client:
        kind = await client.get("/api/objects/address/" + "a" * 64)
        long = await client.get("/api/objects/post/" + "a" * 65)
    assert kind.status_code == 400
    assert kind.json()["error"]["field"] == "kind"
    assert long.status_code == 422
    assert long.json()["error"] == {
        "stage": "bounds",
        "field": "fingerprint",
        "rule": "FINGERPRINT_MAX",
        "detail": "65 bytes is over 64",
        "reason": "`fingerprint`: 65 bytes is over 64 (FINGERPRINT_MAX)",
    }
