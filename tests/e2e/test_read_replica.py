"""Reads from a real PostgreSQL streaming standby (``MIM_DATABASE_READ_URL``), writes to the
primary: the standby's replay is paused to tell which server answered."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import httpx
import pytest

from mim import canonical
from mim.entities import ApiResponse, Filter, Provable
from mim.signing import SigningKey
from relay.bus import Layout
from relay.connect import close_nats, connect_nats
from relay.embedded import PostgresServer, free_port
from relay.submit import submit
from tests.helpers.gateway import REQUEST_POW, request
from tests.helpers.objects import signed_posts
from tests.helpers.procs import REPO, ServiceProcess
from tests.helpers.servers import temp_dir
from tests.helpers.store import migrate_template

DIFFICULTY = 6
KEY = SigningKey.generate(bytes(range(50, 82)))

pytestmark = pytest.mark.slow


@pytest.fixture
def standby(dedicated_postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """A hot standby streaming from the test's own primary."""
    with temp_dir("mimrelay-standby-") as path:
        server = PostgresServer(path / "pg", fsync=False, standby_of=dedicated_postgres_server.dsn)
        try:
            yield server.start()
        finally:
            server.stop()


async def _value(url: str, query: str, *args: object) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def _served(api: str) -> str:
    """The text of every post cache page the gateway serves now."""
    pages = []
    async with httpx.AsyncClient(base_url=api, timeout=5.0) as http:
        index = await http.get("/v0/c0/posts/index.json")
        if index.status_code != 200:
            return ""
        for result in index.json().get("results") or []:
            for n in range(4):
                page = await http.get(f"/v0/c0/posts/{result['response_url']}/{n}.json")
                pages.append(page.text if page.status_code == 200 else "")
    return "\n".join(pages)


async def _queried(api: str, posts: list[Provable]) -> set[str]:
    """Those of ``posts`` a signed POST query naming them answers with (what the read URL holds)."""
    query = request(
        "posts", (Filter(type="fingerprint", values=tuple(p.fingerprint for p in posts)),)
    )
    async with httpx.AsyncClient(base_url=api, timeout=5.0) as http:
        answer = await http.post(
            "/v0/c0/posts", content=query, headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 200, answer.text
    found = canonical.loads(ApiResponse, answer.content).response.posts or ()
    return {p.fingerprint for p in found}


async def _until(what: str, check: Callable[[], Awaitable[bool]], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not within {within}s: {what}"
        await asyncio.sleep(0.2)


async def _export(env: dict[str, str]) -> list[str]:
    """``mimrelay export --jsonl -`` with ``env``: the fingerprints it wrote."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.cli", "export", "--jsonl", "-",
        cwd=REPO, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    return [json.loads(line)["object"]["fingerprint"] for line in lines]


async def _submit(nats_url: str, layout: Layout, post: Provable) -> None:
    nc = await connect_nats(nats_url, "test", attempts=3, delay=0.2)
    try:
        await submit(nc.jetstream(), layout, "post", canonical.encode(post))
    finally:
        await close_nats(nc)


async def test_reads_come_from_the_standby_and_writes_go_to_the_primary(
    dedicated_postgres_server: PostgresServer,
    standby: PostgresServer,
    nats_url: str,
    stream_prefix: str,
    tmp_path: Path,
) -> None:
    """With a gateway reading from a streaming standby: a post stored on the primary is answered
    to POST queries once replayed; while the standby's replay is paused a newer post is on the
    primary but neither a POST query nor ``mimrelay export`` (reading the same URL) show it, and
    they show it once replay resumes; the caches, built and kept on the primary, serve it at once
    (a generation never skips what a lagging standby has not replayed); the gateway's reads are
    connected to the standby, its node key was written on the primary; and a stopped standby
    turns ``/healthz`` 503 naming ``postgres-read``, 200 again when it is back."""
    primary, replica = dedicated_postgres_server.dsn, standby.dsn
    await migrate_template(primary)
    first, second = signed_posts(
        2, 11, key=KEY, difficulty=DIFFICULTY, start=int(time.time()) - 60, label="replica"
    )
    port = free_port()
    env = {
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": primary,
        "MIM_STREAM_PREFIX": stream_prefix,
        "MIM_MIN_POW": str(DIFFICULTY),
        "MIM_DATA_DIR": str(tmp_path),
        "MIM_VALIDATOR_METRICS_PORT": "0",
        "MIM_VALIDATOR_FETCH_TIMEOUT_SECONDS": "0.2",
        "MIM_STORE_METRICS_PORT": "0",
        "MIM_STORE_FETCH_TIMEOUT_SECONDS": "0.2",
        "MIM_GATEWAY_HOST": "127.0.0.1",
        "MIM_GATEWAY_PORT": str(port),
        "MIM_GATEWAY_METRICS_PORT": "0",
        "MIM_GATEWAY_CACHE_INTERVAL_SECONDS": "1",
        "MIM_GATEWAY_POST_MIN_POW": str(REQUEST_POW),
        "MIM_GATEWAY_LIVE_TAIL_OVERLAP_SECONDS": "1",  # commits lag their stamps far less here
    }
    reading = {**env, "MIM_DATABASE_READ_URL": replica}
    api = f"http://127.0.0.1:{port}"
    layout = Layout(stream_prefix)
    with ExitStack() as stack:
        procs = []
        for service, service_env in (("store", env), ("validator", env), ("gateway", reading)):
            proc = stack.enter_context(ServiceProcess(["-m", f"services.{service}"], service_env))
            await asyncio.to_thread(proc.wait_for, "service_ready", 60.0)
            procs.append(proc)
        gateway = procs[-1]
        health = f"{gateway.wait_for('service_started')['metrics_url']}/healthz"

        await _submit(nats_url, layout, first)

        async def answers_first() -> bool:
            return first.fingerprint in await _queried(api, [first, second])

        await _until("the gateway answers with the first post", answers_first)

        await _value(replica, "SELECT pg_wal_replay_pause()")
        await _submit(nats_url, layout, second)

        async def on_primary() -> bool:
            query = "SELECT count(*) FROM objects WHERE fingerprint = $1"
            return await _value(primary, query, second.fingerprint) == 1

        await _until("the primary stores the second post", on_primary)

        async def cached_second() -> bool:  # built on the primary, the caches do not wait
            return second.fingerprint in await _served(api)

        await _until("the caches serve the second post", cached_second)
        assert await _queried(api, [first, second]) == {first.fingerprint}
        assert await _export(reading) == [first.fingerprint]

        await _value(replica, "SELECT pg_wal_replay_resume()")

        async def answers_second() -> bool:
            return second.fingerprint in await _queried(api, [first, second])

        await _until("the gateway answers with the second post after replay", answers_second)
        assert sorted(await _export(reading)) == sorted([first.fingerprint, second.fingerprint])

        readers = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        assert await _value(replica, readers, "mimrelay-gateway") >= 1  # type: ignore[operator]
        assert await _value(replica, "SELECT pg_is_in_recovery()") is True
        assert await _value(primary, "SELECT count(*) FROM node_state") == 1

        async with httpx.AsyncClient(timeout=5.0) as http:
            await asyncio.to_thread(standby.stop)

            async def unhealthy() -> bool:
                answer = await http.get(health)
                return answer.status_code == 503 and "postgres-read" in answer.json()["reason"]

            await _until("/healthz names the lost read replica", unhealthy, within=30.0)
            await asyncio.to_thread(standby.restart)

            async def healthy() -> bool:
                return (await http.get(health)).status_code == 200

            await _until("/healthz is 200 with the replica back", healthy, within=30.0)
        for proc in procs:
            proc.terminate()
        assert [await asyncio.to_thread(p.wait, 30.0) for p in procs] == [0, 0, 0]
