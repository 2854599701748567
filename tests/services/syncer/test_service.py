"""``python -m services.syncer`` as a real process: ready, syncing on schedule, metrics, SIGTERM."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager

import httpx

from tests.helpers.metrics import sample, scrape
from tests.helpers.procs import ServiceProcess
from tests.services.syncer.conftest import Nodes
from tests.services.syncer.node import Node, forum

#: Fast schedule for loopback tests: tick and rest briefly, dial plain HTTP.
FAST: dict[str, str] = {
    "MIM_SYNCER_TICK_SECONDS": "0.5",
    "MIM_SYNCER_EXCLUSION_LIVE_SECONDS": "0.5",
    "MIM_SYNCER_SCHEME": "http",
    "MIM_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
    "MIM_SYNCER_CONNECT_TIMEOUT_SECONDS": "5",
    "MIM_SYNCER_REQUEST_TIMEOUT_SECONDS": "20",
    "MIM_SYNCER_POW_TIMEOUT_SECONDS": "30",
}


def syncer_env(node: Node, bootstrap: Sequence[Node], **extra: str) -> dict[str, str]:
    """The environment of ``node``'s syncer service, bootstrapped from ``bootstrap``."""
    return {
        "MIM_NATS_URL": node.nats_url,
        "MIM_DATABASE_URL": node.database_url,
        "MIM_STREAM_PREFIX": node.layout.prefix,
        "MIM_CONNECT_ATTEMPTS": "10",
        "MIM_BOOTSTRAP": ",".join(peer.address for peer in bootstrap),
        "MIM_PUBLIC_PORT": str(node.port),
        "MIM_SYNCER_METRICS_PORT": "0",
        **FAST,
        **extra,
    }


@contextmanager
def running_syncer(node: Node, bootstrap: Sequence[Node], **extra: str) -> Iterator[ServiceProcess]:
    """``node``'s syncer service, ready; killed on exit if the test did not stop it."""
    env = syncer_env(node, bootstrap, **extra)
    with ServiceProcess(["-m", "services.syncer"], env=env) as proc:
        proc.wait_for("service_ready", 60.0)
        yield proc


async def stop_all(*procs: ServiceProcess, within: float = 30.0) -> list[int]:
    """SIGTERM every process at once and return their exit codes (in order)."""
    for proc in procs:
        if proc.proc.poll() is None:
            proc.terminate()
    return list(await asyncio.gather(*(asyncio.to_thread(p.wait, within) for p in procs)))


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    """Poll the async predicate ``check`` every 0.2 s until it is true, or fail naming ``what``."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.2)


async def test_service_reports_ready_syncs_on_schedule_exports_metrics_and_stops(
    nodes: Nodes,
) -> None:
    """The syncer process answers 200 on ``/healthz``, pulls a bootstrap peer's objects without
    being asked, counts its syncs and pulled objects on ``/metrics``, and on SIGTERM exits 0 with
    a ``shutdown_complete`` line."""
    a, b = await nodes("A"), await nodes("B")
    objects = forum(int(time.time()), "service")
    await a.hold(objects)
    with running_syncer(b, [a]) as proc:
        base = proc.wait_for("service_started")["metrics_url"]
        async with httpx.AsyncClient(timeout=5.0) as http:
            health = await http.get(f"{base}/healthz")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "ok"

        await b.wait_holding(objects, within=45.0)
        finished = proc.wait_for("peer_sync_finished", 30.0, ok=True)
        assert finished["remote"] == a.address

        text = await asyncio.to_thread(scrape, f"{base}/metrics")
        assert (sample(text, "mim_syncer_syncs_total", outcome="ok") or 0) >= 1
        assert (sample(text, "mim_syncer_syncs_started_total") or 0) >= 1
        assert sample(text, "mim_syncer_objects_pulled_total", kind="post") == 2
        assert sample(text, "mim_syncer_objects_pulled_total", kind="board") == 1
        assert (sample(text, "mim_syncer_pages_fetched_total", page="status") or 0) >= 1
        assert (sample(text, "mim_syncer_bytes_fetched_total") or 0) > 0

        codes = await stop_all(proc)
        assert codes == [0], proc.stderr[-2000:]
        done = proc.last("shutdown_complete")
        assert done["reason"] == "SIGTERM" and done["exit_code"] == 0
        assert done["syncs_ok"] >= 1
    await stop_all(*a.procs, *b.procs)
