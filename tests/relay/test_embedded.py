"""relay.embedded: real nats-server and PostgreSQL start, answer, stop, restart with data, die."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from relay import ServerError
from relay.embedded import NatsServer, PostgresServer, free_port, process


def _group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            alive.append(int(entry.name))
    return alive


def _wait_group_gone(pgid: int, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := _group_alive(pgid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def _kill_outright_and_restart(server: NatsServer | PostgresServer) -> int:
    """Kill the server's main process with -9 (not its group), check that it is reaped with that
    status, restart it; the pid it had."""
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.reap() == -signal.SIGKILL
    server.restart()
    return pid


async def _messages_once_answered(nc: NATS, stream: str) -> int:
    """The message count of ``stream``, asked until JetStream answers (a request sent the moment
    the client reconnects can go unanswered while the server recovers its streams)."""
    for _ in range(20):
        with contextlib.suppress(nats.errors.TimeoutError):
            info = await nc.jetstream(timeout=1).stream_info(stream)
            return info.state.messages
    pytest.fail(f"JetStream did not answer about {stream}")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Outside pytest's basetemp (mode 0700): PostgreSQL's system user must reach it as root.
    path = Path(tempfile.mkdtemp(prefix="mimrelay-embedded-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_nats_starts_answers_and_keeps_streams_across_restart(data_dir: Path) -> None:
    """JetStream answers on the reported URL; a stream survives stop and start on the same dir."""
    server = NatsServer(data_dir / "nats")
    with server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="KEEP", subjects=["keep.>"]))
        await js.publish("keep.one", b"1")
        await nc.close()
        first_url = server.url
    assert not server.running
    with server:
        nc = await nats.connect(server.url)
        info = await nc.jetstream().stream_info("KEEP")
        await nc.close()
    assert info.state.messages == 1
    assert first_url.startswith("nats://127.0.0.1:")


def test_chosen_ports_are_outside_the_range_outgoing_connections_take() -> None:
    """Ports chosen for servers that start later are not ones the kernel hands to outgoing
    connections in the meantime, and each can be bound; with the range unknown, the kernel
    chooses."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    low, high = int(ranges[0]), int(ranges[1])
    with socket.create_server(("127.0.0.1", 0)) as listener, contextlib.ExitStack() as stack:
        outgoing = {
            stack.enter_context(socket.create_connection(listener.getsockname())).getsockname()[1]
            for _ in range(50)
        }
        chosen = {free_port() for _ in range(50)}
    assert all(low <= port <= high for port in outgoing)
    assert not any(low <= port <= high for port in chosen)
    assert len(chosen) > 40  # chosen at random, not one port over and over
    for port in chosen:
        with socket.create_server(("127.0.0.1", port)):
            pass


def test_a_port_is_chosen_by_the_kernel_when_no_range_is_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the ephemeral range covers every port above the well-known ones, or cannot be read,
    the port is still one that can be bound."""
    (tmp_path / "range").write_text("1024\t65535\n")
    monkeypatch.setattr(process, "_EPHEMERAL_RANGE_FILE", str(tmp_path / "range"))
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        assert 1024 <= port <= 65535
    monkeypatch.setattr(process, "_EPHEMERAL_RANGE_FILE", str(tmp_path / "absent"))
    with socket.create_server(("127.0.0.1", free_port())):
        pass


async def test_nats_fixed_port_and_second_server_on_same_dir_refused(data_dir: Path) -> None:
    """A requested port is used; a second server on a data dir in use is refused clearly."""
    port = free_port()
    with NatsServer(data_dir / "nats", port=port) as server:
        assert server.port == port
        with pytest.raises(ServerError, match="another nats-server"):
            NatsServer(data_dir / "nats").start()
        assert server.running


def test_nats_profile_port_serves_its_heap_profile_only_when_asked(data_dir: Path) -> None:
    """With a profile port the server answers Go's heap profile in text (its memory statistics
    and the sites holding memory); without one there is no profile URL."""
    port = free_port()
    with NatsServer(data_dir / "nats", profile_port=port) as server:
        assert server.profile_url == f"http://127.0.0.1:{port}/debug/pprof/"
        with urllib.request.urlopen(server.profile_url + "heap?debug=1", timeout=10) as answer:
            text = answer.read().decode()
        assert "# HeapInuse = " in text
        # sites are named by function; which ones the few samples of a fresh server hold varies
        assert re.search(r"^#\t0x[0-9a-f]+\t\S+\+0x[0-9a-f]+\t", text, re.MULTILINE)
    assert server.profile_url == ""
    with NatsServer(data_dir / "other") as plain:
        assert plain.profile_url == ""
        assert "prof_port" not in (data_dir / "other" / "nats-server.conf").read_text()


async def _heap_after_filling(server: NatsServer) -> dict[str, float]:
    """Fill a stream's duplicate window with 60,000 message IDs (about 20 MiB of live heap),
    then the server's memory statistics after a collection, in MiB."""
    nc = await nats.connect(server.url)
    await nc.jetstream().add_stream(
        StreamConfig(name="IDS", subjects=["ids.>"], duplicate_window=600)
    )
    for n in range(60_000):
        await nc.publish(f"ids.{n % 16}", b"x" * 200, headers={"Nats-Msg-Id": f"{n:064x}"})
    await nc.jetstream().publish("ids.last", b"x", headers={"Nats-Msg-Id": "last"})
    await nc.close()
    url = server.profile_url + "heap?debug=1&gc=1"
    text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
    stats = {}
    for line in text.splitlines():
        name, sep, value = line.removeprefix("# ").partition(" = ")
        if sep and value.isdigit():
            stats[name] = int(value) / 2**20
    return stats


async def test_nats_memory_limit_keeps_the_servers_heap_and_held_memory_under_it(
    data_dir: Path,
) -> None:
    """Unlimited, the server lets its heap reach twice what is live before it collects; with a
    memory limit of 32 MiB the same load has it collect before the heap reaches the limit and
    keep no more than the limit from the system."""
    limit = 32
    with NatsServer(data_dir / "free", profile_port=free_port()) as free:
        unlimited = await _heap_after_filling(free)
    capped = NatsServer(data_dir / "capped", profile_port=free_port(), memory_limit=limit << 20)
    with capped:
        limited = await _heap_after_filling(capped)
    assert unlimited["HeapAlloc"] > limit / 2
    assert unlimited["NextGC"] >= 1.9 * unlimited["HeapAlloc"] > limit
    assert limited["NextGC"] < limit
    assert limited["Sys"] - limited["HeapReleased"] < limit


def test_nats_kill_leaves_nothing_and_restart_recovers(data_dir: Path) -> None:
    """kill() ends the server's process group at once; the next start on the dir works."""
    server = NatsServer(data_dir / "nats").start()
    pid = server.pid
    assert pid is not None
    server.kill()
    assert not server.running
    assert _wait_group_gone(pid) == []
    with server:
        assert server.running


async def test_nats_killed_outright_restarts_on_its_port_with_its_streams(data_dir: Path) -> None:
    """A nats-server killed with -9 is reaped with its status and restarted on the same URL, and
    a client connected before the kill finds its stream and message there again."""
    server = NatsServer(data_dir / "nats").start()
    try:
        url = server.url
        nc = await nats.connect(url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
        await nc.jetstream().add_stream(StreamConfig(name="KEEP", subjects=["keep.>"]))
        await nc.jetstream().publish("keep.one", b"1")
        assert server.reap() is None
        pid = _kill_outright_and_restart(server)
        assert server.url == url
        assert server.pid != pid
        assert await _messages_once_answered(nc, "KEEP") == 1
        await nc.close()
    finally:
        server.stop()


def test_nats_stop_is_graceful(data_dir: Path) -> None:
    """stop() sends SIGTERM and the server exits on its own."""
    server = NatsServer(data_dir / "nats").start()
    pid = server.pid
    assert pid is not None
    status = server.stop(timeout=10)
    assert status is not None
    assert status != -signal.SIGKILL
    assert _wait_group_gone(pid) == []


def test_nats_failure_reports_the_log(data_dir: Path) -> None:
    """A server that cannot start raises ServerError with its log tail."""
    with socket_taken() as port, pytest.raises(ServerError, match="nats-server exited"):
        NatsServer(data_dir / "nats", port=port).start(timeout=10)


@contextmanager
def socket_taken() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port: int = sock.getsockname()[1]
        yield port


async def test_postgres_initialises_once_and_keeps_data(data_dir: Path) -> None:
    """initdb runs on the first start only; rows written before a stop are there after restart."""
    server = PostgresServer(data_dir / "pg", fsync=False)
    with server:
        conn = await asyncpg.connect(server.dsn)
        assert await conn.fetchval("select current_user") == "mimrelay"
        assert await conn.fetchval("show server_encoding") == "UTF8"
        await conn.execute("create table kept (n int); insert into kept values (7)")
        await conn.close()
    version = (data_dir / "pg" / "pgdata" / "PG_VERSION").stat().st_mtime_ns
    with PostgresServer(data_dir / "pg", fsync=False) as again:
        conn = await asyncpg.connect(again.url())
        assert await conn.fetchval("select n from kept") == 7
        await conn.close()
    assert (data_dir / "pg" / "pgdata" / "PG_VERSION").stat().st_mtime_ns == version


async def test_postgres_create_database_from_template(data_dir: Path) -> None:
    """create_database clones a template; the clone has the template's tables."""
    with PostgresServer(data_dir / "pg", fsync=False) as server:
        conn = await asyncpg.connect(server.dsn)
        await conn.execute(
            "create table schema_marker (v text); insert into schema_marker values ('x')"
        )
        await conn.close()
        url = server.create_database("clone_one", template="mimrelay")
        conn = await asyncpg.connect(url)
        assert await conn.fetchval("select v from schema_marker") == "x"
        await conn.close()
        server.drop_database("clone_one")
        assert "clone_one" not in server.psql("select datname from pg_database")
        with pytest.raises(ValueError, match="identifier"):
            server.create_database('x"; drop database mimrelay; --')


def test_postgres_kill_leaves_no_process_and_restart_recovers(data_dir: Path) -> None:
    """kill() takes the postmaster and every backend down; the next start recovers the cluster."""
    server = PostgresServer(data_dir / "pg", fsync=False).start()
    server.psql("create table t (n int); insert into t values (1)")
    pid = server.pid
    assert pid is not None
    server.kill()
    assert _wait_group_gone(pid) == []
    server.start()
    try:
        assert server.psql("select count(*) from t").strip() == "1"
    finally:
        server.stop()


async def test_postgres_killed_outright_restarts_on_its_port_with_its_rows(data_dir: Path) -> None:
    """A postmaster killed with -9 under an open session is reaped, its orphaned backends are
    gone before the restart on the same URL, and a committed row is there after recovery."""
    server = PostgresServer(data_dir / "pg", fsync=False).start()
    try:
        dsn = server.dsn
        conn = await asyncpg.connect(dsn)
        await conn.execute("create table t (n int); insert into t values (1)")
        pid = _kill_outright_and_restart(server)
        assert server.dsn == dsn
        assert _group_alive(pid) == []
        again = await asyncpg.connect(dsn)
        assert await again.fetchval("select n from t") == 1
        await again.close()
        conn.terminate()
    finally:
        server.stop()


def test_postgres_stop_is_a_fast_shutdown(data_dir: Path) -> None:
    """stop() sends SIGINT; PostgreSQL exits 0 and leaves no process behind."""
    server = PostgresServer(data_dir / "pg", fsync=False).start()
    pid = server.pid
    assert pid is not None
    assert server.stop(timeout=20) == 0
    assert _wait_group_gone(pid) == []
    assert "fast shutdown" in (data_dir / "pg" / "postgres.log").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_postgres_as_root_runs_as_system_user(data_dir: Path) -> None:
    """As root, the server runs as embedded_postgres, which owns the cluster."""
    with PostgresServer(data_dir / "pg", fsync=False) as server:
        assert server.pid is not None
        uid = os.stat(f"/proc/{server.pid}").st_uid
        assert pwd.getpwuid(uid).pw_name == "embedded_postgres"
        assert (data_dir / "pg" / "pgdata").stat().st_uid == uid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_servers_die_with_a_killed_parent(data_dir: Path) -> None:
    """A launcher killed with SIGKILL (no atexit) still takes both servers down."""
    code = (
        "import sys, time\n"
        "from relay.embedded import NatsServer, PostgresServer\n"
        "n = NatsServer(sys.argv[1] + '/nats').start()\n"
        "p = PostgresServer(sys.argv[1] + '/pg', fsync=False).start()\n"
        "print(n.pid, p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", code, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert launcher.stdout is not None
        nats_pid, pg_pid = (int(p) for p in launcher.stdout.readline().split())
        assert _group_alive(nats_pid) and _group_alive(pg_pid)
    finally:
        launcher.kill()
        launcher.wait()
        if launcher.stdout is not None:
            launcher.stdout.close()
    assert _wait_group_gone(nats_pid, timeout=10) == []
    assert _wait_group_gone(pg_pid, timeout=10) == []
    with PostgresServer(data_dir / "pg", fsync=False) as again:
        assert again.psql("select 1").strip() == "1"
