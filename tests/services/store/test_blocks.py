"""``mimrelay block``, ``unblock`` and ``blocks``: asked of the store, which keeps the list."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from relay.bus import Layout
from tests.helpers.cli import invoke
from tests.services.store.test_service import start_store


@pytest.fixture
def env(nats_url: str, database: str, layout: Layout) -> dict[str, str]:
    return {
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": database,
        "MIM_STREAM_PREFIX": layout.prefix,
    }


@pytest.fixture
def store(database: str, nats_url: str, prefix: str, tmp_path: Path) -> Iterator[None]:
    """A store process of this test's node, answering block requests once it is ready."""
    log = tmp_path / "store.log"
    proc = start_store(database, nats_url, prefix, log)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(20)


async def test_block_requests_without_a_store_say_so(env: dict[str, str]) -> None:
    """With no store running, ``block`` exits 1 with one line saying no store keeps the list."""
    result = await invoke(["block", "ab" * 32], env)
    assert result.exit_code == 1
    assert "no store is running" in result.output


async def test_block_unblock_and_list(
    store: None, env: dict[str, str], nc: NATS, layout: Layout
) -> None:
    """``block`` puts a fingerprint in the table and the bucket, ``blocks`` lists it (table and
    JSON), ``unblock`` removes it from both."""
    fp = "ab" * 32
    for _ in range(100):  # until the store answers
        result = await invoke(["block", fp.upper(), "--reason", "spam"], env)
        if result.exit_code == 0:
            break
        await asyncio.sleep(0.2)
    assert result.exit_code == 0, result.output
    assert f"blocked {fp}" in result.output
    kv = await nc.jetstream().key_value(layout.blocklist_bucket)
    assert json.loads((await kv.get(fp)).value or b"")["reason"] == "spam"
    listed = await invoke(["blocks"], env)
    assert fp in listed.output and "spam" in listed.output
    as_json = await invoke(["blocks", "--json"], env)
    assert json.loads(as_json.stdout.splitlines()[0])["fingerprint"] == fp
    result = await invoke(["unblock", fp], env)
    assert f"unblocked {fp}" in result.output
    assert "0 blocked" in (await invoke(["blocks"], env)).output
