"""Slow and idle connections, and clients that stop reading: closed after their timeouts, and
never more than the bound at once.

Bounds held in every test: the gateway's resident memory grows by at most ``RSS_GROWTH`` during
the attack; the well-behaved client gets 200 for every request, none slower than ``WORST``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import httpx

from tests.helpers.gateway import Gateway, Polite, gateway
from tests.services.gateway.conftest import make, store

RSS_GROWTH = 32 << 20  # bytes
WORST = 2.0  # seconds, for one request of the well-behaved client
TIMEOUT = 1.0  # the header and idle timeouts the gateway runs with here
SLACK = 3.0  # seconds a timeout may take past its setting on a busy machine


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _idle(port: int) -> float:
    """Connect, send nothing; seconds until the gateway closes the connection."""
    started = time.monotonic()
    reader, writer = await _open(port)
    data = await asyncio.wait_for(reader.read(), TIMEOUT + SLACK)
    writer.close()
    assert data == b""
    return time.monotonic() - started


async def _loris(port: int) -> tuple[bytes, float]:
    """Send a request line, then one header byte every 0.2 s; the answer and when it came."""
    started = time.monotonic()
    reader, writer = await _open(port)
    writer.write(b"GET /v0/node HTTP/1.1\r\nHost: x\r\n")
    answer = b""
    try:
        while not answer and time.monotonic() - started < TIMEOUT + SLACK:
            writer.write(b"X")
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(4096), 0.2)
            except TimeoutError:
                continue
            if not answer:
                break
    except ConnectionError:
        pass
    writer.close()
    return answer, time.monotonic() - started


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """What the gateway sent before closing, or ``(open)`` if it keeps the connection."""
    try:
        return await asyncio.wait_for(reader.read(), 1.0)
    except TimeoutError:
        return b"(open)"


def _port(node: Gateway) -> int:
    return int(node.url.rsplit(":", 1)[1])


async def test_slow_and_idle_connections_are_closed_after_their_timeouts(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """Sixty idle connections are closed within the idle timeout and sixty slowloris requests
    get 408 naming the header timeout within the header timeout; meanwhile the well-behaved
    client is served and the gateway holds its memory bound and stays healthy."""
    settings = {
        "MIM_GATEWAY_HEADER_TIMEOUT_SECONDS": str(TIMEOUT),
        "MIM_GATEWAY_IDLE_TIMEOUT_SECONDS": str(TIMEOUT),
    }
    with gateway(nats_url, fresh_database, stream_prefix, tmp_path, **settings) as node:
        port = _port(node)
        with Polite(node.url) as polite:
            before = node.rss()
            idle, loris = await asyncio.gather(
                asyncio.gather(*(_idle(port) for _ in range(60))),
                asyncio.gather(*(_loris(port) for _ in range(60))),
            )
            grown = node.rss() - before
        assert max(idle) <= TIMEOUT + SLACK
        for answer, seconds in loris:
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b'"rule":"http.header_timeout"' in answer
            assert seconds <= TIMEOUT + SLACK
        assert grown <= RSS_GROWTH, grown
        assert polite.manners.failed == [] and polite.manners.worst <= WORST, polite.manners
        assert node.health() == 200
        assert node.metric("mim_gateway_connection_limits_total", rule="http.idle") >= 60
        assert node.metric("mim_gateway_connection_limits_total", rule="http.header_timeout") >= 60


async def test_connections_past_the_bound_are_answered_503_and_closed(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """With 40 connections allowed, 60 held open at once leave 20 answered 503 naming the rule
    and closed at once; when the held ones are gone, new connections are served again."""
    settings = {"MIM_GATEWAY_MAX_CONNECTIONS": "40", "MIM_GATEWAY_IDLE_TIMEOUT_SECONDS": "30"}
    with gateway(nats_url, fresh_database, stream_prefix, tmp_path, **settings) as node:
        port = _port(node)
        with Polite(node.url) as polite:  # holds one of the 40
            held = [await _open(port) for _ in range(60)]
            answers = await asyncio.gather(*(_answer(reader) for reader, _ in held))
            for _, writer in held:
                writer.close()
            await asyncio.sleep(0.5)
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        assert len(refused) == 21  # the well-behaved client holds one connection
        assert all(b'"rule":"http.connections"' in a for a in refused)
        assert answers.count(b"(open)") == 39
        assert polite.manners.failed == [] and polite.manners.worst <= WORST, polite.manners
        reader, writer = await _open(port)
        writer.write(b"GET /v0/status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
        assert node.health() == 200


async def test_a_client_that_stops_reading_is_cut_off(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """A client that asks for a 12 MB cache page and reads none of it, its receive buffer tiny,
    is cut off after the write timeout instead of holding the page in the gateway; the
    well-behaved client is served meanwhile."""
    now = int(time.time())
    board = make("board", {"name": "large"}, now - 100)
    thread = make("thread", {"board": board.fingerprint, "name": "large"}, now - 90)
    body = "x" * 60_000
    posts = [
        make("post", {"board": board.fingerprint, "thread": thread.fingerprint,
                      "body": f"{n} {body}"}, now - 80)
        for n in range(200)
    ]  # fmt: skip
    await store(fresh_database, [board, thread, *posts], now - 5)
    settings = {"MIM_GATEWAY_WRITE_TIMEOUT_SECONDS": str(TIMEOUT)}
    with gateway(nats_url, fresh_database, stream_prefix, tmp_path, **settings) as node:
        async with httpx.AsyncClient(base_url=node.url, timeout=30) as client:
            index = (await client.get("/v0/c0/posts/index.json")).json()
        page = f"/v0/c0/posts/{index['results'][-1]['response_url']}/0.json"
        with Polite(node.url) as polite:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", _port(node)))
            sock.sendall(f"GET {page} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await asyncio.sleep(TIMEOUT + SLACK)
            received = 0
            sock.settimeout(5)
            try:
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
            except (ConnectionError, TimeoutError):
                pass
            sock.close()
        cut = node.metric("mim_gateway_connection_limits_total", rule="http.write_timeout")
        health = node.health()
    assert cut == 1
    assert received < 12_000_000
    assert polite.manners.failed == [] and polite.manners.worst <= WORST, polite.manners
    assert health == 200
