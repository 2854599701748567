"""relay.runner: a real service process drains on SIGTERM, reports health, fails loudly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from relay import DependencyUnavailable, memory
from relay.connect import close_nats, close_pool, connect_nats, connect_pool
from relay.cpu import CpuPool
from relay.embedded import NatsServer, PostgresServer, free_port
from relay.metrics import version
from relay.runner import Context, _serve, health_url, probe
from relay.settings import ServiceSettings
from tests.helpers.metrics import sample, scrape
from tests.helpers.procs import REPO, ServiceProcess, alive
from tests.helpers.servers import with_database

TINY = ["-m", "tests.helpers.tiny_service"]


def _tiny(**env: Any) -> ServiceProcess:
    return ServiceProcess(TINY, env={f"MIM_TINY_{k.upper()}": str(v) for k, v in env.items()})


# --- the process: signals, drain, exit codes ------------------------------------------------


def test_sigterm_lets_in_flight_work_finish() -> None:
    """SIGTERM mid-job: the job completes within the grace, exit 0, one summary line."""
    with _tiny(job_seconds=0.5, shutdown_grace_seconds=10) as proc:
        proc.wait_for("job_started")
        proc.terminate()
        assert proc.wait() == 0
    summary = proc.last("shutdown_complete")
    assert summary["reason"] == "SIGTERM"
    assert summary["exit_code"] == 0
    assert summary["handled"] == 1
    assert summary["cancelled"] == 0
    assert summary["service"] == "tiny"
    assert [r["event"] for r in proc.records].index("job_finished") < len(proc.records) - 1


def test_work_past_the_grace_is_cancelled() -> None:
    """A job longer than the grace is cancelled (left for redelivery); the stop is still clean."""
    with _tiny(job_seconds=60, shutdown_grace_seconds=0.3) as proc:
        proc.wait_for("job_started")
        started = time.monotonic()
        proc.terminate()
        assert proc.wait() == 0
        assert time.monotonic() - started < 10
    summary = proc.last("shutdown_complete")
    assert summary["cancelled"] == 1
    assert "handled" not in summary
    assert not proc.events("job_finished")


def test_health_turns_503_on_stop_and_second_signal_cuts_grace() -> None:
    """/healthz is 200 when ready, 503 while draining; a second signal ends the wait."""
    with _tiny(job_seconds=60, shutdown_grace_seconds=60) as proc:
        started = proc.wait_for("service_started")
        proc.wait_for("service_ready")
        url = f"{started['metrics_url']}/healthz"
        assert probe(url)
        text = scrape(f"{started['metrics_url']}/metrics")
        assert sample(text, "mim_build_info", service="tiny", version=version()) == 1.0
        proc.terminate()
        proc.wait_for("shutdown_started")
        assert not probe(url)
        began = time.monotonic()
        proc.send(signal.SIGINT)
        assert proc.wait() == 0
        assert time.monotonic() - began < 10
    assert proc.events("shutdown_hurried")
    assert proc.last("shutdown_complete")["cancelled"] == 1


def test_exception_in_main_exits_1_with_the_error_logged() -> None:
    """An exception escaping main is logged as service_failed and the process exits 1."""
    with _tiny(fail_after_ready=True) as proc:
        assert proc.wait() == 1
    failed = proc.last("service_failed")
    assert "tiny service failed on purpose" in failed["exception"]
    assert proc.last("shutdown_complete")["exit_code"] == 1


def test_bad_setting_exits_2_naming_the_variable() -> None:
    """A bad variable prints one line naming it on stderr, no traceback, exit status 2."""
    with _tiny(metrics_port="lots") as proc:
        assert proc.wait() == 2
    assert "MIM_TINY_METRICS_PORT='lots'" in proc.stderr
    assert "an integer" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.records == []


def _health(url: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a ``/healthz``."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait_health(url: str, status: int, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = _health(url)
        if answer[0] == status:
            return answer[1]
        assert time.monotonic() < deadline, f"/healthz stayed {answer} instead of {status}"
        time.sleep(0.1)


def test_service_waits_out_a_lost_nats_unhealthy_and_recovers_without_a_restart(
    dedicated_nats_server: NatsServer,
) -> None:
    """NATS killed under a running service: /healthz 503 naming NATS while it is gone (well past
    the connect attempts), 200 again once it is back on its address, and the process never exits.
    """
    env = {
        "MIM_NATS_URL": dedicated_nats_server.url,
        "MIM_CONNECT_ATTEMPTS": "3",
        "MIM_CONNECT_RETRY_SECONDS": "0.1",
        "MIM_TINY_USE_NATS": "1",
    }
    with ServiceProcess(TINY, env=env) as proc:
        url = f"{proc.wait_for('service_started')['metrics_url']}/healthz"
        proc.wait_for("service_ready")
        assert _wait_health(url, 200)["dependencies"] == {"nats": "up"}
        dedicated_nats_server.kill()
        down = _wait_health(url, 503)
        assert down["reason"] == "nats unreachable: connection lost, reconnecting"
        assert proc.wait_for("dependency_lost")["dependency"] == "nats"
        time.sleep(1.0)  # ten reconnect tries, over three times the budget of the first connect
        assert proc.proc.poll() is None
        assert _health(url)[0] == 503
        dedicated_nats_server.restart()
        assert _wait_health(url, 200)["dependencies"] == {"nats": "up"}
        assert proc.wait_for("dependency_back")["down_s"] >= 1.0
        assert proc.proc.poll() is None
        proc.terminate()
        assert proc.wait() == 0
    assert len(proc.events("nats_error")) <= 2  # the lost connection and the first failed try
    assert proc.last("nats_reconnected")["failed_attempts"] >= 5


def test_service_unhealthy_while_postgres_is_down_and_healthy_once_it_is_back(
    dedicated_postgres_server: PostgresServer,
) -> None:
    """PostgreSQL killed under a service with a pool: /healthz 503 naming PostgreSQL within a
    check interval, 200 again once it is back on its address, without the process restarting."""
    env = {
        "MIM_DATABASE_URL": dedicated_postgres_server.dsn,
        "MIM_DEPENDENCY_CHECK_SECONDS": "0.2",
        "MIM_TINY_USE_POSTGRES": "1",
    }
    with ServiceProcess(TINY, env=env) as proc:
        url = f"{proc.wait_for('service_started')['metrics_url']}/healthz"
        proc.wait_for("service_ready")
        assert _wait_health(url, 200)["dependencies"] == {"postgres": "up"}
        dedicated_postgres_server.kill()
        down = _wait_health(url, 503, timeout=10)
        assert down["reason"].startswith("postgres unreachable: ")
        assert down["dependencies"]["postgres"].startswith("unreachable: ")
        lost = proc.wait_for("dependency_lost")
        assert lost["dependency"] == "postgres"
        dedicated_postgres_server.restart()
        assert _wait_health(url, 200)["dependencies"] == {"postgres": "up"}
        assert proc.wait_for("dependency_back")["dependency"] == "postgres"
        text = scrape(url.replace("/healthz", "/metrics"))
        assert sample(text, "mim_dependency_up", dependency="postgres") == 1.0
        proc.terminate()
        assert proc.wait() == 0


# --- in-process: the context ----------------------------------------------------------------


async def test_failing_tracked_task_stops_the_service() -> None:
    """A tracked task that raises is logged, counted by its kind in mim_task_failures_total, and
    turns a running service into exit 1."""

    async def boom() -> None:
        raise ValueError("lost message")

    async def main(ctx: Context) -> None:
        ctx.mark_ready()
        ctx.spawn(boom(), name="handler-7f3a", kind="handler")

    def failures() -> float:
        return REGISTRY.get_sample_value("mim_task_failures_total", {"task": "handler"}) or 0.0

    before = failures()
    with capture_logs() as logs:
        code = await _serve("t", ServiceSettings(shutdown_grace_seconds=1), main)
    assert code == 1
    failed = next(e for e in logs if e["event"] == "task_failed")
    assert failed["task"] == "handler-7f3a"
    assert failures() == before + 1


async def test_until_stopped_returns_none_on_stop_and_closes_resources() -> None:
    """until_stopped gives up a wait when stopping; stack callbacks run in reverse order."""
    order: list[str] = []

    async def close(name: str) -> None:
        order.append(name)

    async def main(ctx: Context) -> None:
        ctx.stack.push_async_callback(close, "first")
        ctx.stack.push_async_callback(close, "second")
        ctx.mark_ready()
        assert ctx.ready
        assert await ctx.until_stopped(asyncio.sleep(0, "now")) == "now"
        asyncio.get_running_loop().call_later(0.05, ctx.request_stop, "test")
        slept = await ctx.until_stopped(asyncio.sleep(30, "slept"))
        assert slept is None
        assert ctx.health() == (False, {"service": "t", "reason": "stopping"})
        ctx.counters["handled"] += 2

    with capture_logs() as logs:
        code = await _serve("t", ServiceSettings(), main)
    assert code == 0
    assert order == ["second", "first"]
    summary = next(e for e in logs if e["event"] == "shutdown_complete")
    assert summary["reason"] == "test"
    assert summary.get("handled") == 2, logs


async def test_read_pool_is_the_primary_unless_a_read_url_is_set(
    fresh_database: str, empty_database: str
) -> None:
    """Without ``MIM_DATABASE_READ_URL`` what only reads shares the primary's pool; with it, a
    second pool reaches the read URL's server, its health shows as ``postgres-read``, and each
    connection names the service to the server."""
    alone = Context("t", ServiceSettings(database_url=fresh_database))
    try:
        primary = await alone.pool(max_size=2)
        assert await alone.read_pool() is primary
    finally:
        await alone.aclose()

    ctx = Context(
        "t", ServiceSettings(database_url=fresh_database, database_read_url=empty_database)
    )
    try:
        primary = await ctx.pool(max_size=2)
        reads = await ctx.read_pool(max_size=2)
        assert reads is not primary
        assert await reads.fetchval("SELECT current_database()") == empty_database.rsplit("/", 1)[1]
        assert await reads.fetchval("SHOW application_name") == "mimrelay-t"
        await ctx.dependencies.check_once()
        assert ctx.dependencies.details() == {
            "dependencies": {"postgres": "up", "postgres-read": "up"}
        }
    finally:
        await ctx.aclose()


async def _backend_gone(pool: Any, pid: int) -> bool:
    for _ in range(50):
        if not await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_pool_connections_are_replaced_after_their_lifetime(fresh_database: str) -> None:
    """After ``MIM_DATABASE_CONNECTION_LIFETIME_SECONDS`` a service's pool reaches PostgreSQL
    through a new server backend and the old one is gone; work running on a connection when it
    expires finishes on it first. With 0 the backend stays the same."""
    ctx = Context(
        "t",
        ServiceSettings(database_url=fresh_database, database_connection_lifetime_seconds=0.4),
    )
    try:
        pool = await ctx.pool(max_size=1)
        assert "postgres-renew" in {t.get_name() for t in ctx.tasks}
        async with pool.acquire() as con:
            first = await con.fetchval("SELECT pg_backend_pid()")
            await asyncio.sleep(1.0)  # expired while in use
            assert await con.fetchval("SELECT pg_backend_pid()") == first
        second = await pool.fetchval("SELECT pg_backend_pid()")
        assert second != first
        assert await _backend_gone(pool, first)
    finally:
        await ctx.aclose()

    kept = Context(
        "t", ServiceSettings(database_url=fresh_database, database_connection_lifetime_seconds=0)
    )
    try:
        pool = await kept.pool(max_size=1)
        first = await pool.fetchval("SELECT pg_backend_pid()")
        await asyncio.sleep(1.0)
        assert await pool.fetchval("SELECT pg_backend_pid()") == first
        assert "postgres-renew" not in {t.get_name() for t in kept.tasks}
    finally:
        await kept.aclose()


def test_health_url_uses_the_service_port() -> None:
    """The health URL a compose check or `mimrelay status` would probe."""
    assert health_url(ServiceSettings(metrics_port=9102)) == "http://127.0.0.1:9102/healthz"
    assert not probe(f"http://127.0.0.1:{free_port()}/healthz", timeout=1)


# --- dependencies with bounded retries ------------------------------------------------------


async def test_connect_nats_waits_for_a_late_server(tmp_path: Any) -> None:
    """Each failed try is logged; once the server is up the connection is made."""
    port = free_port()
    server = NatsServer(tmp_path / "nats", port=port)
    task = asyncio.ensure_future(
        connect_nats(f"nats://127.0.0.1:{port}", "t", attempts=100, delay=0.1)
    )
    with capture_logs() as logs:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(server.start)
        try:
            client = await asyncio.wait_for(task, 20)
            assert client.is_connected
            await close_nats(client)
            assert client.is_closed
        finally:
            await asyncio.to_thread(server.stop)
    waits = [e for e in logs if e["event"] == "dependency_wait"]
    assert waits
    assert all(e["dependency"] == "nats" for e in waits)
    ready = next(e for e in logs if e["event"] == "dependency_ready")
    assert ready["attempts"] == len(waits) + 1


async def test_closing_a_connection_is_not_a_disconnection(nats_url: str) -> None:
    """A connection we close ourselves logs no `nats_disconnected` warning."""
    with capture_logs() as logs:
        client = await connect_nats(nats_url, "t", attempts=1)
        await close_nats(client)
    assert client.is_closed
    assert [e for e in logs if e["event"] == "dependency_ready"]
    assert [e for e in logs if e["event"] == "nats_disconnected"] == []


@pytest.mark.parametrize("attempts", [1, 3])
async def test_connect_nats_gives_up_after_its_attempts(attempts: int) -> None:
    """With nobody listening, the bounded retries (one try, when one is asked) end in
    DependencyUnavailable."""
    url = f"nats://127.0.0.1:{free_port()}"
    with (
        capture_logs() as logs,
        pytest.raises(DependencyUnavailable, match=f"did not answer after {attempts} attempts?:"),
    ):
        await connect_nats(url, "t", attempts=attempts, delay=0.05)
    waits = [e["attempt"] for e in logs if e["event"] == "dependency_wait"]
    assert waits == list(range(1, attempts + 1))


async def test_connect_pool_waits_for_a_late_server(
    dedicated_postgres_server: PostgresServer,
) -> None:
    """The pool waits while PostgreSQL is down and connects once it is back."""
    dsn = dedicated_postgres_server.dsn
    port = dedicated_postgres_server.port
    assert port is not None
    await asyncio.to_thread(dedicated_postgres_server.stop)
    restarted = PostgresServer(dedicated_postgres_server.data_dir, port=port, fsync=False)
    task = asyncio.ensure_future(connect_pool(dsn, attempts=100, delay=0.1))
    with capture_logs() as logs:
        await asyncio.sleep(0.4)
        await asyncio.to_thread(restarted.start)
        try:
            pool = await asyncio.wait_for(task, 20)
            assert await pool.fetchval("select 1") == 1
            await close_pool(pool)
        finally:
            await asyncio.to_thread(restarted.stop)
    assert any(e["event"] == "dependency_wait" for e in logs)
    assert any(e["event"] == "dependency_ready" for e in logs)


async def test_connect_pool_refusal_is_not_retried(database_url: str) -> None:
    """A missing database is a refusal, reported at once rather than after every retry."""
    url = with_database(database_url, "no_such_database")
    started = time.monotonic()
    with pytest.raises(DependencyUnavailable, match="refused"):
        await connect_pool(url, attempts=50, delay=0.2)
    assert time.monotonic() - started < 5


# --- CPU-bound work -------------------------------------------------------------------------


async def test_cpu_pool_runs_in_worker_processes() -> None:
    """Work runs in other processes, at most max_pending submitted at once, and shuts down."""
    pool = CpuPool(2, max_pending=2)
    try:
        pids = await asyncio.gather(*(pool.run(os.getpid) for _ in range(6)))
        assert os.getpid() not in pids
        assert len(set(pids)) <= 2
        assert await pool.run(pow, 3, 4) == 81
    finally:
        await pool.aclose()


async def test_cpu_pool_close_kills_stuck_work() -> None:
    """A call still running after the wait is ended by killing its worker."""
    pool = CpuPool(1)
    stuck = asyncio.ensure_future(pool.run(time.sleep, 60))
    await asyncio.sleep(1.0)
    started = time.monotonic()
    await pool.aclose(wait_seconds=0.2)
    assert time.monotonic() - started < 10
    with pytest.raises(Exception):  # noqa: B017 (BrokenProcessPool or cancellation)
        await stuck


@pytest.mark.parametrize("every", [0.2, 0])
def test_memory_a_service_freed_goes_back_to_the_system(every: float) -> None:
    """64 MiB freed below a live block stay resident under glibc's malloc; with
    MIM_MEMORY_TRIM_SECONDS the service hands them back within a few trims and counts the bytes,
    with 0 it keeps them."""
    if not memory.supported():
        pytest.skip("this C library has no malloc_trim")
    env = {"MIM_TINY_BURST_MIB": "64", "MIM_MEMORY_TRIM_SECONDS": str(every)}
    with ServiceProcess(TINY, env=env) as proc:
        metrics = f"{proc.wait_for('service_started')['metrics_url']}/metrics"
        freed = proc.wait_for("burst_freed")
        pid = proc.proc.pid
        time.sleep(1.5)
        returned = sample(scrape(metrics), "mim_memory_returned_bytes_total")
        resident = _resident(pid)
        proc.terminate()
        assert proc.wait() == 0
    assert freed["resident"] > freed["peak"] - 16 * MIB  # freeing alone gave little back
    if every:
        assert returned is not None and returned >= 48 * MIB
        assert resident < freed["resident"] - 48 * MIB
    else:
        assert returned == 0
        assert resident > freed["resident"] - 16 * MIB


MIB = 1024 * 1024


def _resident(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_metrics_port_in_use_fails_cleanly() -> None:
    """A taken metrics port is one service_failed line naming it and exit 1, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with _tiny(metrics_port=port) as proc:
            assert proc.wait() == 1
    failed = proc.last("service_failed")
    assert failed["port"] == port
    assert "Traceback" not in proc.stderr


_POOL_SCRIPT = """
import asyncio, os, sys
from relay.cpu import CpuPool

async def main():
    pool = CpuPool(2)
    pids = await asyncio.gather(*(pool.run(os.getpid) for _ in range(8)))
    print(" ".join(str(p) for p in sorted(set(pids))), flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_pool_workers_do_not_outlive_a_killed_service() -> None:
    """When a service holding a CPU pool is killed with -9, its worker processes exit too."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _POOL_SCRIPT], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert proc.stdout is not None
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert workers
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(p) for p in workers):
            time.sleep(0.1)
        assert not [p for p in workers if alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
