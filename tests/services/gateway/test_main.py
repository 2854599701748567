"""`python -m services.gateway` as an operator runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import uvloop
from services.gateway.service import listen

from tests.helpers.procs import ServiceProcess


def _env(nats_url: str, database_url: str, data_dir: Path, **more: str) -> dict[str, str]:
    return {
        **os.environ,
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": database_url,
        "MIM_DATA_DIR": str(data_dir),
        "MIM_GATEWAY_PORT": "0",
        "MIM_GATEWAY_LOCAL_PORT": "0",
        "MIM_GATEWAY_METRICS_PORT": "0",
        **more,
    }


def test_sigterm_drains_and_exits_zero(nats_url: str, fresh_database: str, tmp_path: Path) -> None:
    """On SIGTERM the gateway finishes its shutdown and exits 0, not by the signal."""
    env = _env(nats_url, fresh_database, tmp_path)
    with ServiceProcess(["-m", "services.gateway"], env=env) as gateway:
        gateway.wait_for("gateway_ready", timeout=60)
        gateway.send(signal.SIGTERM)
        assert gateway.wait(timeout=60) == 0
        gateway.wait_for("shutdown_complete", timeout=5)


@pytest.mark.parametrize("access_log", ["", "true"])
def test_runs_on_uvloop_and_logs_requests_only_when_asked(
    nats_url: str, fresh_database: str, tmp_path: Path, access_log: str
) -> None:
    """The gateway says it runs on uvloop; by default its requests are counted in /metrics, not
    logged a line each, and with ``MIM_GATEWAY_ACCESS_LOG`` each request writes one line."""
    more = {"MIM_GATEWAY_ACCESS_LOG": access_log} if access_log else {}
    env = _env(nats_url, fresh_database, tmp_path, **more)
    with ServiceProcess(["-m", "services.gateway"], env=env) as gateway:
        assert gateway.wait_for("service_started", timeout=60)["loop"] == "uvloop"
        port = gateway.wait_for("gateway_listening", timeout=60)["public"]
        for _ in range(3):
            assert httpx.get(f"http://127.0.0.1:{port}/v0/status", timeout=10).status_code == 200
        gateway.send(signal.SIGTERM)
        assert gateway.wait(timeout=60) == 0
        logged = [r for r in gateway.records if "GET /v0/status" in str(r.get("event"))]
        assert len(logged) == (3 if access_log else 0)


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_accepted_connections_do_not_wait_for_acknowledgements(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """A connection accepted on the gateway's listening socket has Nagle's algorithm off, on
    either event loop, so an answer written as head then body is not held back 40 ms for the
    client's delayed acknowledgement."""

    async def accept_one() -> int:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[asyncio.BaseTransport] = loop.create_future()

        class Accepting(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                accepted.set_result(transport)

        sock = listen("127.0.0.1", 0)
        server = await loop.create_server(Accepting, sock=sock)
        try:
            _, writer = await asyncio.open_connection(*sock.getsockname())
            transport = await asyncio.wait_for(accepted, 10)
            nodelay: int = transport.get_extra_info("socket").getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY
            )
            writer.close()
            transport.close()
            return nodelay
        finally:
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(accept_one()) == 1
