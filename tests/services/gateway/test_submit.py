"""``POST /api/submit``: objects reach the ingest stream; garbage is refused with a reason."""

from __future__ import annotations

import json
import time

import httpx

from mim import canonical
from relay.bus import ensure_streams
from tests.services.gateway.conftest import Running, make


async def test_submitted_object_lands_on_the_ingest_stream(running: Running) -> None:
    """A valid board is answered 202 with its fingerprint and is found on the ingest stream."""
    gw = running.gateway
    assert gw.nc is not None
    js = gw.nc.jetstream()
    await ensure_streams(js, gw.layout)
    board = make("board", {"name": "submitted"}, int(time.time()))
    item = {"kind": "board", "object": json.loads(canonical.dumps(board))}
    async with httpx.AsyncClient(base_url=running.url) as client:
        answer = await client.post("/api/submit", json=[item])
        assert answer.status_code == 202, answer.text
        (receipt,) = answer.json()["queued"]
        assert receipt["fingerprint"] == board.fingerprint
        garbage = await client.post(
            "/api/submit", json={"kind": "board", "object": {"creation": "yesterday"}}
        )
        assert garbage.status_code == 400
        assert garbage.json()["error"]["rule"]
        schema = (await client.get("/openapi.json")).json()
        assert "/api/submit" in schema["paths"]
    info = await js.stream_info(gw.layout.ingest_stream)
    assert info.state.messages == 1
