"""Two gateway processes of one node: what one remembers of a request, the other knows.

Both run as the operator runs them (``python -m services.gateway``) on one NATS server, one
database and one stream prefix, each on its own ports; requests go to one or the other as a load
balancer would send them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from mim import canonical
from mim.entities import ApiResponse, Filter
from tests.helpers.gateway import REQUEST_POW, Gateway, error_of, gateway, request
from tests.services.gateway.conftest import JSON, make, store

SHARED = {"MIM_GATEWAY_POST_MIN_POW": str(REQUEST_POW)}


@contextmanager
def _two(
    nats_url: str, database: str, prefix: str, data_dir: Path, **settings: str
) -> Iterator[tuple[Gateway, Gateway]]:
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(
                gateway(nats_url, database, prefix, data_dir / name, **SHARED, **settings)
            )
            for name in ("a", "b")
        )
        yield a, b


def _client(url: str, remote: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=remote)
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=30)


async def test_a_nonce_spent_on_one_replica_is_refused_on_the_other(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """A POST answered by replica A, sent again to replica B, is refused 400 as a reused nonce;
    the same request with a new nonce is answered by B."""
    with _two(nats_url, fresh_database, stream_prefix, tmp_path) as (a, b):
        body = request("node")
        async with httpx.AsyncClient(timeout=30) as client:
            first = await client.post(f"{a.url}/v0/node", content=body, headers=JSON)
            replayed = await client.post(f"{b.url}/v0/node", content=body, headers=JSON)
            fresh = await client.post(f"{b.url}/v0/node", content=request("node"), headers=JSON)
    assert first.status_code == 200
    assert replayed.status_code == 400
    assert error_of(replayed)["rule"] == "request.nonce_reused"
    assert fresh.status_code == 200


async def test_a_remote_over_its_lease_on_one_replica_is_refused_on_the_other(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """With one remote leased node-wide, a remote served by A is refused 429 by B while a second
    remote holds the lease, and with one request in flight per remote, a remote whose slow POST
    is in flight on A is refused 429 by B until that POST is answered."""
    settings = {"MIM_GATEWAY_MAX_REMOTES": "1", "MIM_GATEWAY_MAX_REQUESTS_PER_REMOTE": "1"}
    with _two(nats_url, fresh_database, stream_prefix, tmp_path, **settings) as (a, b):
        async with _client(a.url, "127.0.0.2") as on_a, _client(b.url, "127.0.0.3") as on_b:
            held = await on_a.get("/v0/node")
            other = await on_b.get("/v0/node")
        async with _client(b.url, "127.0.0.2") as same_on_b:
            port = int(a.url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.0.2", 0)
            )
            writer.write(
                b"POST /v0/c0/boards HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2\r\n\r\n{"
            )
            await writer.drain()
            for _ in range(200):  # until A has taken the POST's headers
                busy = await same_on_b.get("/v0/node")
                if busy.status_code != 200:
                    break
                await asyncio.sleep(0.05)
            writer.write(b"}")
            answered = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            await asyncio.sleep(0.2)
            after = await same_on_b.get("/v0/node")
    assert held.status_code == 200
    assert other.status_code == 429
    assert error_of(other) == {
        "field": "remote",
        "rule": "http.lease",
        "reason": "too many remotes",
    }
    assert busy.status_code == 429
    assert error_of(busy)["reason"] == "too many requests in flight"
    assert answered.startswith(b"HTTP/1.1 400")
    assert after.status_code == 200


async def test_a_container_written_by_one_replica_is_served_by_the_other(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """A POST answer too large for one page, answered by A, is a container whose every page B
    serves with the same bytes as A."""
    now = int(time.time())
    board = make("board", {"name": "container"}, now - 100)
    threads = [
        make("thread", {"board": board.fingerprint, "name": f"t{n}"}, now - 90) for n in range(450)
    ]
    await store(fresh_database, [board, *threads], now - 5)
    with _two(nats_url, fresh_database, stream_prefix, tmp_path) as (a, b):
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(
                f"{a.url}/v0/c0/threads",
                content=request("threads", (Filter(type="timestamp", values=("0", "0")),)),
                headers=JSON,
            )
            face = canonical.loads(ApiResponse, answer.content)
            assert face.results, answer.text
            folder = face.results[0].response_url
            pages = ["0.json", "1.json", "index/0.json", "manifest/0.json"]
            from_a = [await client.get(f"{a.url}/v0/responses/{folder}/{p}") for p in pages]
            from_b = [await client.get(f"{b.url}/v0/responses/{folder}/{p}") for p in pages]
            missing = await client.get(f"{b.url}/v0/responses/post_{'0' * 64}/0.json")
    assert [r.status_code for r in from_b] == [200] * len(pages)
    assert [r.content for r in from_b] == [r.content for r in from_a]
    threads_served = {
        t.fingerprint
        for r in from_b[:2]
        for t in canonical.loads(ApiResponse, r.content).response.threads or ()
    }
    assert threads_served == {t.fingerprint for t in threads}
    assert missing.status_code == 204
