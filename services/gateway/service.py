"""The gateway's life under the shared runner: open, serve until SIGTERM, drain.

:func:`start` opens NATS and the pools through the runner's context (the primary for the node key,
``MIM_DATABASE_READ_URL`` for everything else, which only reads), makes or loads the node key,
builds the first cache tree and starts its upkeep (:mod:`services.gateway.upkeep`, supervised);
:func:`main` then serves the app with uvicorn on ``MIM_GATEWAY_HOST:MIM_GATEWAY_PORT`` until the
runner's stop, when uvicorn stops accepting, lets in-flight requests finish within the shutdown
grace, and the runner closes NATS and the pool. The runner owns the signals; ``/healthz`` on the
metrics port is 200 once the API listens, and 503 while NATS is lost or the caches keep failing.
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
from services.gateway.app import create_app
from services.gateway.edge import Edge
from services.gateway.settings import GatewaySettings
from services.gateway.state import Gateway
from services.gateway.tls import ensure_certificate

__all__ = ["listen", "main", "start"]


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


def listen(settings: GatewaySettings) -> socket.socket:
    """The API's listening socket (bound now, so the port is known before serving)."""
    family = socket.AF_INET6 if ":" in settings.gateway_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.gateway_host, settings.gateway_port))
    sock.set_inheritable(True)
    return sock


async def start(ctx: Context, *, port: int) -> Edge:
    """Open what the gateway needs, build the first caches and keep them fresh; the app.

    ``port`` is where the API listens; we announce ``MIM_PUBLIC_PORT`` when set, else it.
    """
    settings = cast(GatewaySettings, ctx.settings)
    nc = await ctx.nats()
    pool = await ctx.pool(min_size=1, max_size=settings.pool_size)
    key = await identity.create(pool)
    layout = Layout.from_settings(settings)
    await ensure_streams(nc.jetstream(), layout, StreamLimits.from_settings(settings))
    replica = await ctx.read_pool(min_size=1, max_size=settings.pool_size)
    gw = Gateway(settings, key, pool, nc, layout, settings.announced_port(port), replica=replica)
    await gw.regenerate()
    ctx.spawn(upkeep.keep_fresh(ctx, gw), name="cache-upkeep")
    ctx.log.info("gateway_ready", node_id=pages.node_id(key.public_hex), port=gw.port)
    return create_app(gw)


def _config(app: Edge, settings: GatewaySettings) -> uvicorn.Config:
    tls: dict[str, str] = {}
    if settings.tls:
        cert, key = ensure_certificate(settings.data_dir / "gateway-tls")
        tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    return uvicorn.Config(
        app,
        log_config=None,
        lifespan="off",
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        **tls,  # type: ignore[arg-type]
    )


async def main(ctx: Context) -> None:
    """Serve the API until the runner stops the service."""
    settings = cast(GatewaySettings, ctx.settings)
    sock = listen(settings)
    ctx.stack.callback(sock.close)
    app = await start(ctx, port=sock.getsockname()[1])
    server = _Server(_config(app, settings))
    serving = ctx.spawn(server.serve(sockets=[sock]), name="http")
    await ctx.until_stopped(server.listening.wait())
    if server.started:
        ctx.mark_ready()
    await ctx.stop.wait()
    server.should_exit = True
    await serving
