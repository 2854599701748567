"""The rest of what a stranger found at the edge, each on a real gateway: submission needs the
operator, pings have their own lease, a client that hangs up is no error, API documents are the
operator's.

Bounds held in every test: the well-behaved client gets 200 for every request, none slower than
``WORST``, and the gateway is healthy afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx

from mim import canonical, create
from tests.helpers.gateway import MINT, Polite, error_of, gateway
from tests.services.gateway.conftest import AUTHOR, JSON

WORST = 2.0  # seconds, for one request of the well-behaved client


def _board(name: str, difficulty: int) -> dict[str, object]:
    obj = create.create("board", {"name": name}, AUTHOR, difficulty, int(time.time()), MINT)
    return {"kind": "board", "object": json.loads(canonical.encode(obj))}


async def test_submission_needs_the_local_listener_a_token_or_the_networks_rules(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """On the public listener a submission without a token gets 401 with a Bearer challenge, one
    with a token made on the local listener is queued until the token's rate is spent (429 with
    Retry-After), and the local listener takes it as the operator's; opened to the public, an
    object under the network's proof of work is rejected at stage pow and none is queued."""
    with gateway(nats_url, fresh_database, stream_prefix, tmp_path, MIM_MIN_POW="2") as node:
        async with (
            httpx.AsyncClient(base_url=node.url, timeout=30) as public,
            httpx.AsyncClient(base_url=node.local, timeout=30) as local,
        ):
            with Polite(node.url) as polite:
                board = [_board("tokenless", 2)]
                anonymous = await public.post("/api/submit", json=board)
                made = await local.post("/api/tokens", json={"name": "web", "rate_per_minute": 2})
                bearer = {"Authorization": f"Bearer {made.json()['token']}"}
                taken = await public.post("/api/submit", json=board, headers=bearer)
                over = await public.post(
                    "/api/submit", json=[_board("one", 2), _board("two", 2)], headers=bearer
                )
                operator = await local.post("/api/submit", json=[_board("operator", 2)])
            health = node.health()
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert error_of(anonymous)["rule"] == "auth.required"
    assert made.status_code == 201 and taken.status_code == 202
    assert over.status_code == 429 and error_of(over)["rule"] == "auth.rate"
    assert over.headers["retry-after"] == "60"
    assert operator.status_code == 202
    assert polite.manners.failed == [] and polite.manners.worst <= WORST, polite.manners
    assert health == 200

    settings = {"MIM_GATEWAY_PUBLIC_SUBMIT": "true", "MIM_MIN_POW": "21"}
    with gateway(nats_url, fresh_database, stream_prefix, tmp_path, **settings) as node:
        async with httpx.AsyncClient(base_url=node.url, timeout=30) as public:
            weak = await public.post("/api/submit", json=[_board("weak", 2)])
    assert weak.status_code == 422
    (receipt,) = weak.json()["queued"]
    assert receipt["verdict"]["stage"] == "pow" and receipt["id"] == ""


async def test_pings_take_their_own_lease(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """With two ping leases, a third remote pinging gets 429 on `/v0/ping/` while the Mim API
    still serves it; the first two keep their ping leases (§11.2)."""
    settings = {"MIM_GATEWAY_PING_MAX_REMOTES": "2"}
    answers = {}
    with (
        gateway(nats_url, fresh_database, stream_prefix, tmp_path, **settings) as node,
        Polite(node.url) as polite,
    ):
        for n in (1, 2, 3):
            transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{n}")
            async with httpx.AsyncClient(base_url=node.url, transport=transport) as client:
                answers[n] = (
                    (await client.get("/v0/ping/status")).status_code,
                    (await client.get("/v0/ping/node")).status_code,
                    (await client.get("/v0/status")).status_code,
                )
        refused = node.metric("mim_gateway_lease_refusals_total", lease="ping", reason="remotes")
        health = node.health()
    assert answers == {1: (200, 200, 200), 2: (200, 200, 200), 3: (429, 429, 200)}
    assert refused == 2
    assert polite.manners.failed == [] and polite.manners.worst <= WORST, polite.manners
    assert health == 200


async def test_a_client_that_hangs_up_mid_body_is_a_normal_event(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """A POST that promises 1,000 bytes, sends 10 and hangs up is logged `client_disconnected`
    at info level and counted with status 499; nothing is logged as an error."""
    with gateway(nats_url, fresh_database, stream_prefix, tmp_path) as node:
        port = int(node.url.rsplit(":", 1)[1])
        with Polite(node.url) as polite:
            for _ in range(3):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(
                    b"POST /v0/c0/posts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n0123456789"
                )
                await writer.drain()
                await asyncio.sleep(0.2)
                writer.close()
            await asyncio.to_thread(node.proc.wait_for, "client_disconnected", 10)
            await asyncio.sleep(0.5)
            counted = node.metric("mim_gateway_requests_total", route="post", status="499")
            health = node.health()
        records = list(node.proc.records)
    gone = [r for r in records if r.get("event") == "client_disconnected"]
    assert len(gone) == 3 and {r["level"] for r in gone} == {"info"}
    assert [r for r in records if r.get("level") in ("error", "critical")] == []
    assert counted == 3
    assert polite.manners.failed == [] and polite.manners.worst <= WORST, polite.manners
    assert health == 200


async def test_api_documents_are_served_on_the_local_listener_only(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """`/docs` and `/openapi.json` answer on the local listener; the public one answers them as
    any path it does not serve (204), and its document lists no token routes."""
    with gateway(nats_url, fresh_database, stream_prefix, tmp_path) as node:
        async with (
            httpx.AsyncClient(base_url=node.url, timeout=10) as public,
            httpx.AsyncClient(base_url=node.local, timeout=10) as local,
        ):
            served = [(await local.get(p)).status_code for p in ("/docs", "/openapi.json")]
            hidden = [(await public.get(p)).status_code for p in ("/docs", "/openapi.json")]
            document = (await local.get("/openapi.json")).json()
            tokens = await public.post("/api/tokens", json={"name": "x"}, headers=JSON)
    assert served == [200, 200] and hidden == [204, 204]
    assert "/api/tokens" in document["paths"]
    assert tokens.status_code == 204  # not a route of the public listener
