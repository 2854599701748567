"""``python -m services.store`` as a real process: SIGTERM drains, kill -9 loses nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
from nats.js import JetStreamContext

from mim import canonical
from relay.bus import Layout
from tests.services.store.factory import Factory, publish_objects
from tests.services.store.test_writer import wait_for

ROOT = Path(__file__).resolve().parents[3]


def start_store(database: str, nats_url: str, prefix: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MIM_DATABASE_URL": database,
        "MIM_NATS_URL": nats_url,
        "MIM_STREAM_PREFIX": prefix,
        "MIM_LOG_FORMAT": "json",
        "MIM_STORE_METRICS_PORT": "0",
        "MIM_STORE_BATCH_SIZE": "10",
        "MIM_STORE_FETCH_TIMEOUT_SECONDS": "0.2",
        "MIM_STORE_SHUTDOWN_GRACE_SECONDS": "5",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.store"], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


async def stored(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM objects"))


async def bodies(pool: asyncpg.Pool) -> list[str]:
    return [r["body"] for r in await pool.fetch("SELECT body FROM objects")]


async def test_sigterm_mid_stream_drains_exits_zero_and_loses_nothing(
    js: JetStreamContext, layout: Layout, prefix: str, pool: asyncpg.Pool, database: str,
    nats_server_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    """SIGTERM while objects stream in exits 0; a restarted store then holds every object once."""
    objs = Factory(6).posts(400)
    await publish_objects(js, layout, objs)
    log = tmp_path / "store.log"
    proc = start_store(database, nats_server_url, prefix, log)
    try:
        await wait_for(lambda: stored(pool), 30, "the store to start writing")
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(asyncio.to_thread(proc.wait), 20)
        assert code == 0, log.read_text()
        assert b"shutdown_complete" in log.read_bytes()
        proc = start_store(database, nats_server_url, prefix, log)

        async def done() -> bool:
            return await stored(pool) == len(objs)

        await wait_for(done, 60, "every object stored after the restart")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert sorted(await bodies(pool)) == sorted(canonical.dumps(o) for o in objs)


async def test_kill_minus_nine_then_restart_ends_with_exactly_the_expected_set(
    js: JetStreamContext, layout: Layout, prefix: str, pool: asyncpg.Pool, database: str,
    nats_server_url: str, tmp_path: Path,
) -> None:  # fmt: skip
    """Killing the store outright mid-run and restarting it stores every object, none twice."""
    f = Factory(7)
    objs = f.posts(400)
    board = objs[0]
    update = f.update(board, {"description": "edited"}, now=board.creation + 10)
    await publish_objects(js, layout, objs)
    log = tmp_path / "store.log"
    proc = start_store(database, nats_server_url, prefix, log)
    try:
        await wait_for(lambda: stored(pool), 30, "the store to start writing")
        proc.kill()
        proc.wait(10)
        await publish_objects(js, layout, [update])
        proc = start_store(database, nats_server_url, prefix, log)

        async def done() -> bool:
            info = await js.consumer_info(layout.accepted_stream, layout.store_consumer)
            return bool(info.num_pending == 0 and info.num_ack_pending == 0)

        await wait_for(done, 60, "the accepted stream to drain after the restart")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    expected = [canonical.dumps(update)] + [canonical.dumps(o) for o in objs[1:]]
    assert sorted(await bodies(pool)) == sorted(expected)
