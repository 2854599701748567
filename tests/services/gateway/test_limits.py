"""The gateway's limits as a client meets them: leases, body size, a full ingest stream; its
request metrics and its HTTPS mode, as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from cryptography import x509
from services.gateway.state import Gateway

from mim import canonical, pages
from mim.entities import ApiResponse
from relay.bus import StreamLimits, ensure_streams
from relay.embedded import free_port
from tests.helpers.metrics import sample, scrape
from tests.helpers.procs import ServiceProcess
from tests.services.gateway.conftest import JSON, make, serving


def _error(response: httpx.Response) -> dict[str, str]:
    body: dict[str, dict[str, str]] = response.json()
    return body["error"]


async def test_one_remote_beyond_its_inflight_limit_gets_429(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """With one request in flight allowed per remote, a second one while a slow POST is still
    sending its body gets 429 with Retry-After, a cache file the edge holds in memory too, and
    both are served again once that POST is done."""
    async with (
        serving(
            fresh_database, nats_url, stream_prefix, tmp_path, max_requests_per_remote=1
        ) as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as client,
    ):
        port = int(served.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v0/c0/boards HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{"
        )
        await writer.drain()
        for _ in range(500):  # until the server has taken the POST's headers: 10 s at most
            refused = await client.get("/v0/node")
            if refused.status_code != 200:
                break
            await asyncio.sleep(0.02)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "10"
        assert _error(refused)["rule"] == "http.lease"
        index = await client.get("/v0/c0/posts/index.json")
        assert (index.status_code, _error(index)["rule"]) == (429, "http.lease")
        assert (await client.get("/v0/ping/status")).status_code == 200  # pings hold no lease
        writer.write(b"}")
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        await writer.wait_closed()
        assert status_line.startswith(b"HTTP/1.1 400")
        # the POST's slot is given back just after its answer has left: within moments
        assert await _served_within(client, "/v0/node", 5.0)
        assert (await client.get("/v0/c0/posts/index.json")).status_code == 200


async def _served_within(client: httpx.AsyncClient, path: str, seconds: float) -> bool:
    """Whether ``path`` is answered 200 within ``seconds``, asked every 20 ms."""
    deadline = asyncio.get_running_loop().time() + seconds
    while (await client.get(path)).status_code != 200:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_remotes_beyond_the_lease_limit_get_429(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """With one remote leased at a time, a second address is refused 429 with the configured
    Retry-After on the Mim API while the first keeps being served; the local listener takes no
    lease."""
    async with (
        serving(
            fresh_database,
            nats_url,
            stream_prefix,
            tmp_path,
            max_remotes=1,
            lease_retry_after_seconds=3,
        ) as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as first,
        httpx.AsyncClient(
            base_url=served.url,
            timeout=10,
            transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"),
        ) as second,
        httpx.AsyncClient(
            base_url=served.local,
            timeout=10,
            transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"),
        ) as second_local,
    ):
        gw: Gateway = served.gateway
        assert gw.nc is not None
        await ensure_streams(gw.nc.jetstream(), gw.layout)
        assert (await first.get("/v0/node")).status_code == 200
        refused = await second.get("/v0/node")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "3"
        assert _error(refused) == {
            "field": "remote",
            "rule": "http.lease",
            "reason": "too many remotes",
        }
        assert (await second.get("/v0/c0/boards/index.json")).status_code == 429
        assert (await first.get("/v0/c0/boards/index.json")).status_code == 200
        board = make("board", {"name": "leased"}, int(time.time()))
        item = {"kind": "board", "object": json.loads(canonical.dumps(board))}
        assert (await second_local.post("/api/submit", json=item)).status_code == 202


async def test_bodies_over_the_limit_get_413_naming_it(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """A body over the configured size is refused 413 with the limit in the reason, whether it
    declares its length or streams in chunks, on the Mim API and on both listeners' submission."""

    async def chunked(total: int) -> AsyncIterator[bytes]:
        for _ in range(total // 512):
            yield b" " * 512

    async with (
        serving(fresh_database, nats_url, stream_prefix, tmp_path, max_body_bytes=2048) as served,
        httpx.AsyncClient(base_url=served.url, timeout=10) as client,
        httpx.AsyncClient(base_url=served.local, timeout=10) as local,
    ):
        answers = {
            "declared": await client.post("/v0/c0/boards", content=b" " * 4096, headers=JSON),
            "chunked": await client.post("/v0/c0/boards", content=chunked(4096), headers=JSON),
            "submit": await client.post("/api/submit", content=b" " * 4096, headers=JSON),
            "local submit": await local.post("/api/submit", content=b" " * 4096, headers=JSON),
        }
        small = await client.post("/v0/c0/boards", content=b" " * 1024, headers=JSON)
    for name, answer in answers.items():
        assert answer.status_code == 413, name
        assert _error(answer) == {
            "field": "body",
            "rule": "http.body_size",
            "reason": "over 2048 bytes",
        }, name
    assert small.status_code == 400
    assert _error(small)["rule"] != "http.body_size"


async def test_full_ingest_stream_gets_429_with_retry_after(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """When the ingest stream holds its limit, a submission is answered 429 with the configured
    Retry-After and is not queued; what was queued before stays."""
    now = int(time.time())
    boards = [make("board", {"name": f"full {n}"}, now - n) for n in range(3)]
    items = [{"kind": "board", "object": json.loads(canonical.dumps(b))} for b in boards]
    async with (
        serving(
            fresh_database, nats_url, stream_prefix, tmp_path, submit_retry_after_seconds=7
        ) as served,
        httpx.AsyncClient(base_url=served.local, timeout=10) as client,
    ):
        gw: Gateway = served.gateway
        assert gw.nc is not None
        js = gw.nc.jetstream()
        await ensure_streams(js, gw.layout, StreamLimits(max_msgs=2))
        queued = [await client.post("/api/submit", json=item) for item in items[:2]]
        refused = await client.post("/api/submit", json=items[2])
        info = await js.stream_info(gw.layout.ingest_stream)
    assert [a.status_code for a in queued] == [202, 202]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "7"
    assert _error(refused)["rule"] == "submit.full"
    assert info.state.messages == 2


def _gateway_env(nats_url: str, database: str, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": database,
        "MIM_DATA_DIR": str(data_dir),
        "MIM_GATEWAY_HOST": "127.0.0.1",
        "MIM_GATEWAY_LOCAL_PORT": "0",
        "MIM_GATEWAY_METRICS_HOST": "127.0.0.1",
        **extra,
    }


async def test_metrics_count_requests_by_route_and_status(
    nats_url: str, fresh_database: str, tmp_path: Path
) -> None:
    """After known traffic, the metrics port shows mim_gateway_requests_total per route and
    status with exactly those counts, each answer timed in the route's histogram and its body
    bytes counted, whether the edge answered it from memory or the app did."""
    port, metrics_port = free_port(), free_port()
    env = _gateway_env(
        nats_url,
        fresh_database,
        tmp_path,
        MIM_GATEWAY_PORT=str(port),
        MIM_GATEWAY_METRICS_PORT=str(metrics_port),
    )
    with ServiceProcess(["-m", "services.gateway"], env=env) as gateway:
        gateway.wait_for("gateway_ready", timeout=30)
        await _listening(port)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(3):
                assert (await client.get("/v0/node")).status_code == 200
            assert (await client.get("/v0/c0/posts/missing.json")).status_code == 204
            index = [await client.get("/v0/c0/posts/index.json") for _ in range(3)]
            assert [a.status_code for a in index] == [200, 200, 200]
            assert (await client.delete("/v0/node")).status_code == 405
            bad = await client.post("/v0/c0/posts", content=b"{", headers=JSON)
            assert bad.status_code == 400
        text = await asyncio.to_thread(scrape, f"http://127.0.0.1:{metrics_port}/metrics")
        gateway.terminate()
        assert gateway.wait(timeout=30) == 0
    name = "mim_gateway_requests_total"
    assert sample(text, name, route="node", status="200") == 3
    assert sample(text, name, route="cache", status="204") == 1
    assert sample(text, name, route="cache", status="200") == 3
    duration = "mim_gateway_request_duration_seconds"
    assert sample(text, f"{duration}_count", route="cache") == 4
    assert sample(text, f"{duration}_bucket", route="cache", le="+Inf") == 4
    assert 0 < (sample(text, f"{duration}_sum", route="cache") or 0) < 30
    sent = sum(int(a.headers["content-length"]) for a in index)  # as sent: gzip
    assert sample(text, "mim_gateway_bytes_out_total", route="cache") == sent
    assert sample(text, name, route="node", status="405") == 1
    assert sample(text, name, route="post", status="400") == 1
    assert sample(text, "mim_gateway_posts_rejected_total", reason="json") == 1


async def _listening(port: int, within: float = 30.0) -> None:
    """Wait until the port accepts connections: the app is ready before uvicorn binds it."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return


async def test_tls_serves_https_with_a_self_signed_certificate(
    nats_url: str, fresh_database: str, tmp_path: Path
) -> None:
    """With MIM_TLS=1 the API answers over HTTPS with a self-signed certificate kept in the data
    directory, and plain HTTP on that port gets no answer."""
    port = free_port()
    env = _gateway_env(
        nats_url,
        fresh_database,
        tmp_path,
        MIM_TLS="1",
        MIM_GATEWAY_PORT=str(port),
        MIM_GATEWAY_METRICS_PORT="0",
    )
    with ServiceProcess(["-m", "services.gateway"], env=env) as gateway:
        gateway.wait_for("gateway_ready", timeout=30)
        await _listening(port)
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}", verify=False) as client:
            node = await client.get("/v0/node", timeout=10)
        pem = await asyncio.to_thread(ssl.get_server_certificate, ("127.0.0.1", port), timeout=10)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as plain:
            try:
                answer: int | str = (await plain.get("/v0/node", timeout=5)).status_code
            except httpx.HTTPError as exc:
                answer = type(exc).__name__
        gateway.terminate()
        assert gateway.wait(timeout=30) == 0
    assert node.status_code == 200
    assert node.url.scheme == "https"
    page = canonical.loads(ApiResponse, node.content)
    assert pages.verify_page(page) == pages.node_id(page.node_public_key)
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert cert.issuer == cert.subject
    kept = x509.load_pem_x509_certificate((tmp_path / "gateway-tls" / "cert.pem").read_bytes())
    assert kept == cert
    assert answer != 200
