"""The gateway's life under the shared runner: open, serve until SIGTERM, drain.

:func:`start` opens NATS and the pools through the runner's context (the primary for the node key,
tokens and the caches, ``MIM_DATABASE_READ_URL`` for the other reads), makes or loads the node
key, opens the node's shared request state (:mod:`services.gateway.shared`), takes the cache
builder lease if it is free (then builds a generation, else loads the latest) and starts the
caches' upkeep (:mod:`services.gateway.upkeep`, supervised); :func:`main` then serves two
listeners with uvicorn until the runner's stop, when uvicorn stops accepting, lets in-flight
requests finish within the shutdown grace, and the runner closes NATS and the pools:

- the public Mim API on ``MIM_GATEWAY_HOST:MIM_GATEWAY_PORT`` (HTTPS with ``MIM_TLS``);
- the operator's local API on ``MIM_GATEWAY_LOCAL_HOST:MIM_GATEWAY_LOCAL_PORT`` (loopback).

Both are served by :func:`services.gateway.http.protocol` under the edge settings (connections,
header size and count, URL length, header, idle and write timeouts), with ``X-Forwarded-For``
trusted only from ``MIM_GATEWAY_TRUSTED_PROXIES``; with ``MIM_GATEWAY_REUSE_PORT`` several replicas
on one host share both ports. The runner owns the signals; ``/healthz`` on the metrics port is 200
once both listen, and 503 while NATS is lost or the caches keep failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import cast

import uvicorn

from mim import pages
from relay.bus import Layout, StreamLimits, ensure_streams
from relay.db import identity
from relay.runner import Context
from services.gateway import upkeep
from services.gateway.app import Apps, create_apps
from services.gateway.edge import Edge
from services.gateway.http import HttpLimits, protocol
from services.gateway.nonces import Nonces
from services.gateway.remotes import LeaseClass, Leases
from services.gateway.settings import GatewaySettings
from services.gateway.shared import Shared, open_shared
from services.gateway.state import Gateway
from services.gateway.tls import ensure_certificate
from services.gateway.tokens import TokenBook

__all__ = ["listen", "main", "server_config", "start"]


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (the runner owns SIGTERM and SIGINT), telling
    when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.listening.set()


def listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket on ``host:port`` (bound now, so the port is known before serving).

    It is made as a TCP socket by name: asyncio turns Nagle's algorithm off only on sockets whose
    protocol says TCP, and with it on, an answer written as head then body waits for the client's
    delayed acknowledgement, 40 ms on Linux.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # replicas on one host share the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _leases(shared: Shared, settings: GatewaySettings) -> Leases:
    return Leases(
        {
            "main": LeaseClass("main", shared.leases, settings.remote_lease_seconds),
            "ping": LeaseClass("ping", shared.ping_leases, settings.ping_lease_seconds),
        },
        shared.inflight,
        max_inflight=settings.max_requests_per_remote,
        refresh_seconds=settings.lease_refresh_seconds,
        slot_seconds=settings.request_timeout_seconds,
    )


async def start(ctx: Context, *, port: int) -> Apps:
    """Open what the gateway needs, build the first caches and keep them fresh; the two apps.

    ``port`` is where the public API listens; we announce ``MIM_PUBLIC_PORT`` when set, else it.
    """
    settings = cast(GatewaySettings, ctx.settings)
    nc = await ctx.nats()
    pool = await ctx.pool(min_size=1, max_size=settings.pool_size)
    key = await identity.create(pool)
    layout = Layout.from_settings(settings)
    js = nc.jetstream()
    await ensure_streams(js, layout, StreamLimits.from_settings(settings))
    shared = await open_shared(js, layout, settings)
    gw = Gateway(
        settings,
        key,
        pool,
        nc,
        layout,
        settings.announced_port(port),
        nonces=Nonces(shared.nonces, max_per_key=settings.nonce_max_per_key),
        containers=shared.containers,
        replica=await ctx.read_pool(min_size=1, max_size=settings.pool_size),
    )
    lease = await upkeep.open_lease(gw)
    upkeep.set_building(gw, await lease.take())
    if gw.building:
        await gw.regenerate()
    else:
        await gw.caches.refresh()
    ctx.spawn(upkeep.keep_lease(ctx, gw, lease), name="cache-lease")
    ctx.spawn(upkeep.keep_fresh(ctx, gw), name="cache-upkeep")
    tokens = TokenBook(
        pool,
        shared.rates,
        refresh_seconds=settings.token_refresh_seconds,
        default_rate=settings.token_rate_per_minute,
        most=settings.tokens_max,
    )
    ctx.log.info("gateway_ready", node_id=pages.node_id(key.public_hex), port=gw.port)
    return create_apps(gw, _leases(shared, settings), tokens)


def server_config(app: Edge, settings: GatewaySettings, *, public: bool) -> uvicorn.Config:
    """How uvicorn serves ``app``: every bound of the edge set here, none left to its defaults."""
    tls: dict[str, str] = {}
    if public and settings.tls:
        cert, key = ensure_certificate(settings.data_dir / "gateway-tls")
        tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    limits = HttpLimits(
        max_connections=settings.max_connections,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        max_url_bytes=settings.max_url_bytes,
        header_timeout=settings.header_timeout_seconds,
        idle_timeout=settings.idle_timeout_seconds,
        write_timeout=settings.write_timeout_seconds,
    )
    proxies = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=settings.access_log,
        lifespan="off",
        http=protocol(limits),
        ws="none",
        # our protocol refuses connections past the bound; uvicorn's own check counts requests
        limit_concurrency=settings.max_connections + 1,
        backlog=settings.backlog,
        timeout_keep_alive=int(max(1, settings.idle_timeout_seconds)),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        proxy_headers=bool(proxies) and public,
        forwarded_allow_ips=proxies or None,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        **tls,  # type: ignore[arg-type]
    )


async def main(ctx: Context) -> None:
    """Serve both listeners until the runner stops the service."""
    settings = cast(GatewaySettings, ctx.settings)
    public_sock = listen(
        settings.gateway_host, settings.gateway_port, reuse_port=settings.reuse_port
    )
    ctx.stack.callback(public_sock.close)
    local_sock = listen(settings.local_host, settings.local_port, reuse_port=settings.reuse_port)
    ctx.stack.callback(local_sock.close)
    apps = await start(ctx, port=public_sock.getsockname()[1])
    servers = [
        (_Server(server_config(apps.public, settings, public=True)), public_sock),
        (_Server(server_config(apps.local, settings, public=False)), local_sock),
    ]
    serving = [
        ctx.spawn(server.serve(sockets=[sock]), name=f"http-{n}")
        for n, (server, sock) in enumerate(servers)
    ]
    for server, _ in servers:
        await ctx.until_stopped(server.listening.wait())
    if all(server.started for server, _ in servers):
        ctx.log.info("gateway_listening", public=public_sock.getsockname()[1],
                     local=local_sock.getsockname()[1])  # fmt: skip
        ctx.mark_ready()
    await ctx.stop.wait()
    for server, _ in servers:
        server.should_exit = True
    for task in serving:
        await task
