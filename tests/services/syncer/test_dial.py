"""The syncer dials a host name only at an address the rules allow, checked when it connects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from services.syncer.client import Client, FetchError
from services.syncer.dial import CheckedBackend
from services.syncer.peers import Remote

from relay.location import parse_rules


class _Server:
    """A plain HTTP server on loopback that answers 200 and keeps each request's Host header."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.port = 0

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        for line in head.split("\r\n"):
            if line.lower().startswith("host:"):
                self.hosts.append(line.split(":", 1)[1].strip())
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[_Server]:
    served = _Server()
    listener = await asyncio.start_server(served._answer, "127.0.0.1", 0)
    served.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield served


async def _get(client: Client, host: str, port: int) -> int:
    try:
        status, _ = await client.request(Remote(host, port, scheme="http"), "GET", "v0/node")
    finally:
        await client.aclose()
    return status


async def test_a_name_resolving_to_loopback_is_not_dialled(server: _Server) -> None:
    """``localhost`` (resolved by the machine's own resolver) leads to loopback, which the public
    rules do not allow: the request fails as ``refused_place`` naming the range, and the server
    never sees it."""
    with pytest.raises(FetchError) as failed:
        await _get(Client(rules=parse_rules("")), "localhost", server.port)
    assert failed.value.reason == "refused_place"
    assert "'localhost' resolves to" in failed.value.detail and "loopback" in failed.value.detail
    assert server.hosts == []


@pytest.mark.parametrize("allowed", ["127.0.0.0/8,::1/128", "localhost"])
async def test_an_allowed_network_or_name_is_dialled_under_its_name(
    server: _Server, allowed: str
) -> None:
    """With loopback's networks, or the name itself, allowed, the same request is answered and
    the server sees the name in ``Host``."""
    assert await _get(Client(rules=parse_rules(allowed)), "localhost", server.port) == 200
    assert server.hosts == [f"localhost:{server.port}"]


async def test_a_name_with_any_private_answer_is_refused(server: _Server) -> None:
    """A name whose DNS answers a public address beside a private one (a rebinding set) is
    refused as a whole, not dialled at the address that happens to come first."""

    async def rebinding(host: str, port: int) -> list[str]:
        return ["8.8.8.8", "10.0.0.7"]

    backend = CheckedBackend(parse_rules(""), resolver=rebinding)
    with pytest.raises(FetchError) as failed:
        await _get(Client(backend=backend), "node.example.com", server.port)
    assert failed.value.reason == "refused_place" and "10.0.0.7" in failed.value.detail


async def test_an_address_literal_is_dialled_as_given(server: _Server) -> None:
    """An IP literal was checked where it was learned; the dialler connects to it as it is."""
    assert await _get(Client(rules=parse_rules("")), "127.0.0.1", server.port) == 200
