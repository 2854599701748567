"""``mimrelay export-static``: the head as files, served by a stock web server, crawls the same."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from pathlib import Path

import httpx

from tests.helpers.procs import export_static
from tests.services.gateway.conftest import Running, cover, sample, store
from tests.services.gateway.crawler import crawl


async def test_static_export_crawls_like_the_gateway(
    running: Running, fresh_database: str, tmp_path: Path
) -> None:
    """The exported tree served by python -m http.server verifies page by page and holds the
    same objects as the live gateway, signed by the same node."""
    now = int(time.time())
    await store(fresh_database, sample(now), now - 30)
    await cover(running.gateway, now)
    async with httpx.AsyncClient(base_url=running.url) as client:
        live = await crawl(client)
    out = tmp_path / "static"
    await export_static(fresh_database, out)
    # a stock server cannot run our node page handler; give it the live node page to serve
    async with httpx.AsyncClient(base_url=running.url) as client:
        (out / "v0" / "node").write_bytes((await client.get("/v0/node")).content)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
        "--directory", str(out),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = (await asyncio.wait_for(server.stdout.readline(), 20)).decode()
        port = re.search(r"port (\d+)", line)
        assert port, line
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port.group(1)}") as client:
            static = await crawl(client)
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)
    assert static.objects == live.objects
    assert static.node_id == live.node_id
