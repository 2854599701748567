"""What several benches share: the repository root, embedded servers, services as subprocesses,
fresh databases and a bulk loader for the ``objects`` table."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import asyncpg

from mim.entities import Provable
from relay.db import storing
from relay.db.schema import migrate
from relay.embedded import NatsServer, PostgresServer

REPO: Final = Path(__file__).resolve().parents[1]

#: The columns ``copy_rows`` fills: the store's row, then arrival and last reference.
COLUMNS: Final = (
    *(f.name for f in dataclasses.fields(storing.ObjectRow)),
    "local_arrival",
    "last_referenced",
)


async def copy_rows(url: str, objects: Sequence[Provable], when: int) -> None:
    """COPY ``objects`` into ``objects``, arrived and last referenced at ``when``, then ANALYZE.

    Much faster than the store's upserts, for filling a node before it is measured; the rows are
    the store's own (``storing.row_of``).
    """
    records = [(*dataclasses.astuple(storing.row_of(o)), when, when) for o in objects]
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_records_to_table("objects", records=records, columns=COLUMNS)
        await conn.execute("ANALYZE objects")
    finally:
        await conn.close()


def spawn(
    module: str, env: Mapping[str, str], *, stdout: int | None = subprocess.DEVNULL
) -> subprocess.Popen[bytes]:
    """``python -m module`` in the repository root, unbuffered, with ``env`` over this environment.

    Its log lines (stdout) are dropped unless ``stdout`` says otherwise (``subprocess.PIPE`` to
    read them, ``None`` to show them); its stderr, where a crash is told, is this process's.
    """
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=stdout,
    )


def stop(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """SIGTERM ``procs``, the last started first, and wait for each; kill one that outlasts
    ``timeout`` seconds."""
    for proc in reversed(procs):
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def fresh_database(postgres: PostgresServer, name: str, *, migrated: bool = False) -> str:
    """Create the empty database ``name`` on ``postgres``, with the store's schema if
    ``migrated``; returns its URL."""
    url = await asyncio.to_thread(postgres.create_database, name)
    if migrated:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
    return url


@contextlib.contextmanager
def embedded_servers(
    name: str, *, fsync: bool = False
) -> Iterator[tuple[Path, NatsServer, PostgresServer]]:
    """nats-server and PostgreSQL in a fresh temporary directory (``mimrelay-bench-<name>-``):
    the directory and both servers; stopped and removed at the end."""
    root = Path(tempfile.mkdtemp(prefix=f"mimrelay-bench-{name}-"))
    nats_server = NatsServer(root / "nats").start()
    try:
        postgres = PostgresServer(root / "pg", fsync=fsync).start()
        try:
            yield root, nats_server, postgres
        finally:
            postgres.stop()
    finally:
        nats_server.stop()
        shutil.rmtree(root, ignore_errors=True)
