"""Connections that reach only the places the address rules allow (§13.6, ``docs/security.md``).

Every address is checked before it is stored and again before it is dialled, but a host name is
only a name: whoever runs its DNS can point it at the operator's own network (loopback, a private
range, a cloud's metadata address) after it passed, or answer differently the second time. So the
syncer's HTTP pools connect through :class:`CheckedBackend`: it resolves a name itself, checks
every address the name resolves to with :func:`relay.location.check_resolved`, and connects to the
first one, so the address checked is the address dialled. TLS still sends the name (SNI) and the
request its ``Host``. An address given as an IP literal was checked where it was learned and is
dialled as it is.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from relay.location import AddressRules, check_resolved

__all__ = ["CheckedBackend", "Resolve", "checked_transport", "resolve"]

Resolve = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to for a TCP connection, in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, dialling a host name only at an address the rules allow."""

    def __init__(
        self,
        rules: AddressRules,
        *,
        resolver: Resolve = resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._rules = rules
        self._resolve = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def place(self, host: str, port: int, within: float | None) -> str:
        """The address to dial for ``host``; :class:`relay.AddressRefused` when any address it
        resolves to is not one the node may dial, ``httpcore.ConnectError`` when it resolves
        to none."""
        if _literal(host):
            return host
        try:
            found = await asyncio.wait_for(self._resolve(host, port), within)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"{host!r} did not resolve: {exc!r}") from exc
        if not found:
            raise httpcore.ConnectError(f"{host!r} resolved to no address")
        allowed = [check_resolved(host, ip, self._rules) for ip in found]  # every one, or none
        return allowed[0]

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_tcp(
            await self.place(host, port, timeout),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("remotes are dialled over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def checked_transport(
    backend: CheckedBackend, *, verify: bool, limits: httpx.Limits
) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connection pool dials through ``backend``.

    httpx has no public way to pass a network backend, so the transport's pool is made again with
    it; a transport without that pool (a future httpx) is refused here, never used unchecked.
    """
    transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError("httpx.AsyncHTTPTransport no longer keeps an httpcore pool")
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(verify=verify),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=backend,
    )
    return transport
