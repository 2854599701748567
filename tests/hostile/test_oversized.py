"""Oversized requests: a header that never ends, too many headers, a URL too long, a body too
large; each refused by rule after reading no more than its bound.

Bounds held in every test: the gateway's resident memory grows by at most ``RSS_GROWTH`` during
the attack; the well-behaved client gets 200 for every request, none slower than ``WORST``.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from tests.helpers.gateway import Gateway, Polite, gateway

RSS_GROWTH = 32 << 20  # bytes
WORST = 2.0  # seconds, for one request of the well-behaved client
HEADER_BYTES = 16384  # the gateway's default bound on a request line and headers
CHUNK = 1 << 16


async def _endless_header(port: int, up_to: int) -> tuple[bytes, int]:
    """Send one header of up to ``up_to`` bytes in chunks, reading as we go: the answer, and the
    bytes sent before it came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v0/node HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    answer = b""
    try:
        while sent < up_to and not answer:
            writer.write(b"a" * CHUNK)
            sent += CHUNK
            await writer.drain()
            try:
                answer = await asyncio.wait_for(reader.read(4096), 0.001)
            except TimeoutError:
                continue
    except ConnectionError:
        pass
    if not answer:
        answer = await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    return answer, sent


async def _raw(port: int, request: bytes) -> bytes:
    """Send ``request`` as it is; the one answer (head and body) that comes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    body = await asyncio.wait_for(reader.readexactly(int(length.group(1)) if length else 0), 10)
    writer.close()
    return head + body


def _error(answer: bytes) -> dict[str, str]:
    error: dict[str, str] = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    return error


def _port(node: Gateway) -> int:
    return int(node.url.rsplit(":", 1)[1])


async def test_oversized_heads_are_refused_by_rule_after_reading_their_bound(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """Eight clients each sending a 128 MB header get 431 naming the size rule before they sent
    more than a few hundred KB of it; 100 header lines get 431 naming the count, a 8 KB URL 414,
    a declared 64 MB body 413, before any of it is read; the well-behaved client is served
    throughout and the gateway stays healthy within its memory bound."""
    with gateway(nats_url, fresh_database, stream_prefix, tmp_path) as node:
        port = _port(node)
        with Polite(node.url) as polite:
            before = node.rss()
            endless = await asyncio.gather(*(_endless_header(port, 128 << 20) for _ in range(8)))
            many = b"".join(b"X-%d: y\r\n" % n for n in range(100))
            counted = await _raw(port, b"GET /v0/node HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
            long_url = await _raw(port, b"GET /" + b"a" * 8192 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            body = await _raw(
                port,
                b"POST /v0/c0/posts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 67108864\r\n\r\n{",
            )
            grown = node.rss() - before
        for answer, sent in endless:
            assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
            assert _error(answer)["rule"] == "http.header_size"
            assert sent <= 64 * CHUNK  # the gateway answered long before the header ended
        assert counted.startswith(b"HTTP/1.1 431")
        assert _error(counted)["rule"] == "http.header_count"
        assert long_url.startswith(b"HTTP/1.1 414") and _error(long_url)["rule"] == "http.url_size"
        assert body.startswith(b"HTTP/1.1 413") and _error(body)["rule"] == "http.body_size"
        assert grown <= RSS_GROWTH, grown
        assert polite.manners.failed == [] and polite.manners.worst <= WORST, polite.manners
        assert node.health() == 200
        assert node.metric("mim_gateway_connection_limits_total", rule="http.header_size") == 8


async def test_the_rest_of_a_refused_body_is_dropped_for_a_bounded_time(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """A client told 413 for a declared 64 MB body that keeps trickling it is read and dropped
    (its memory stays flat) and cut off after the idle timeout, not held for ever."""
    settings = {"MIM_GATEWAY_IDLE_TIMEOUT_SECONDS": "1"}
    with gateway(nats_url, fresh_database, stream_prefix, tmp_path, **settings) as node:
        reader, writer = await asyncio.open_connection("127.0.0.1", _port(node))
        writer.write(
            b"POST /v0/c0/posts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 67108864\r\n\r\n"
        )
        status = await asyncio.wait_for(reader.readline(), 10)
        before = node.rss()
        started = asyncio.get_running_loop().time()
        closed = False
        while not closed and asyncio.get_running_loop().time() - started < 10:
            try:
                writer.write(b" " * CHUNK)
                await writer.drain()
                await asyncio.sleep(0.05)
            except ConnectionError:
                closed = True
        held = asyncio.get_running_loop().time() - started
        writer.close()
        lingered = node.metric("mim_gateway_connection_limits_total", rule="http.body_linger")
        grown = node.rss() - before
    assert status.startswith(b"HTTP/1.1 413")
    assert closed and held <= 1 + 3
    assert lingered == 1
    assert grown <= RSS_GROWTH, grown
