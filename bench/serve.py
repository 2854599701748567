"""The gateway's GET speed beside nginx, and its POST query latency with many objects stored.

    python bench/serve.py [--seconds 5] [--connections 32] [--objects 100000] [--queries 300]

One run, everything on loopback, every child process stopped at the end:

- embedded nats-server and PostgreSQL (``relay.embedded``) in a temporary directory, the store's
  migrations applied, a key, a board, a thread and a few hundred posts stored;
- the gateway (``python -m services.gateway``, uvicorn) on a free port; its caches are built at
  start from those objects and served from its memory of cache files once asked;
- ``mimrelay export-static`` of the same database (signed with the key the gateway made), served
  by Debian's nginx (installed with apt-get if missing) from a private configuration on another
  free port;
- GET: the same client (``wrk`` if installed, else an async httpx loop with bounded concurrency)
  loads the largest posts cache page from each server for ``--seconds``, gateway and nginx
  interleaved over three rounds, best round each; printed: requests/s and gateway/nginx (target
  >= 0.5), uvicorn's HTTP parser and the event loop the gateway says it started on: the gateway
  answers cached GETs in its ASGI edge, so what is left is mostly uvicorn's parsing and the
  socket writes, and h11 on the stdlib loop reaches about half the rate that httptools on uvloop
  does;
- POST: ``--objects`` posts are then copied into the store (``COPY``, rows from the store's own
  ``row_of``), and ``--queries`` signed entity POSTs (a fingerprint filter naming one stored post,
  and a timestamp filter over the last minutes) are timed one after the other; printed: p50 and
  p99 per query type. Request proof of work is set to 4 for the run, since minting 15 for every
  request would time the client, not the gateway.

Nothing is asserted: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from common import REPO, copy_rows, fresh_database, spawn, stop
from mim import canonical, create, pages
from mim import pow as mim_pow
from mim.entities import ApiResponse, Filter, Provable
from mim.signing import SigningKey
from relay.db import storing
from relay.embedded import NatsServer, PostgresServer, free_port

MINT = mim_pow.local_minter(random.Random(3).randrange)
AUTHOR = SigningKey.generate(bytes(range(1, 33)))
POST_POW = 4
NGINX_CONF = """
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    types {{ application/json json; }}
    default_type application/json;
    sendfile on;
    keepalive_requests 1000000;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {static};
    }}
}}
"""


def _posts(board: Provable, thread: Provable, count: int, now: int) -> list[Provable]:
    return [
        create.create(
            "post",
            {"board": board.fingerprint, "thread": thread.fingerprint, "body": f"post number {n}"},
            None,
            1,
            now - count + n,
            MINT,
        )
        for n in range(count)
    ]


async def _seed_head(url: str, now: int) -> list[Provable]:
    """Store a small head with the store's writer; returns the posts."""
    conn = await asyncpg.connect(url)
    try:
        key = create.create("key", {"name": "bench"}, AUTHOR, 1, now - 900, MINT)
        board = create.create("board", {"name": "bench"}, AUTHOR, 1, now - 800, MINT)
        thread = create.create(
            "thread", {"board": board.fingerprint, "name": "bench"}, AUTHOR, 1, now - 700, MINT
        )
        posts = _posts(board, thread, 300, now - 600)
        async with conn.transaction():  # stored long enough ago that the first caches hold them
            await storing.store_objects(conn, [key, board, thread, *posts], now - 600)
        return [board, thread, *posts]
    finally:
        await conn.close()


async def _copy_many(url: str, board: Provable, thread: Provable, count: int, now: int) -> float:
    """COPY ``count`` posts into ``objects``, inside the head; returns the seconds it took."""
    started = time.perf_counter()
    posts = _posts(board, thread, count, now - 3 * 86400)
    await copy_rows(url, posts, now - 86400)
    return time.perf_counter() - started


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening on {port}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def _ensure_nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not found:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx"], check=True, env=env)
        found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found


def _wrk(url: str, seconds: float, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", url],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None or "Non-2xx" in out:
        raise RuntimeError(f"wrk: {out}")
    return float(found.group(1))


async def _httpx_loop(url: str, seconds: float, connections: int) -> float:
    done = 0
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        deadline = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                answer = await client.get(url)
                answer.raise_for_status()
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return done / (time.monotonic() - started)


def _load(url: str, seconds: float, connections: int) -> float:
    if shutil.which("wrk"):
        return _wrk(url, seconds, connections)
    return asyncio.run(_httpx_loop(url, seconds, connections))


def _server_stack(log: Path) -> str:
    """The HTTP parser uvicorn's ``auto`` picks in this interpreter, and the event loop the
    gateway says it runs on in its ``service_started`` line."""
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    found = re.search(r'"loop": "(\w+)"', log.read_text(errors="replace"))  # MIM_LOG_FORMAT=json
    loop = found.group(1) if found else "an unknown loop"
    return f"uvicorn with {http} on {loop}"


def _cache_page(base: str) -> str:
    """The path of the largest page of the first posts cache that ``base`` serves."""
    index = canonical.loads(
        ApiResponse, httpx.get(f"{base}/v0/c0/posts/index.json", timeout=10).content
    )
    assert index.results, f"{base} serves no posts cache"
    folder = f"v0/c0/posts/{index.results[0].response_url}"
    sizes = {}
    for n in range(10):
        answer = httpx.get(f"{base}/{folder}/{n}.json", timeout=10)
        if answer.status_code != 200:
            break
        sizes[f"{folder}/{n}.json"] = len(answer.content)
    return max(sizes, key=lambda p: sizes[p])


def _requests(count: int, filters_of: Any, now: int, first: int = 0) -> list[bytes]:
    """Signed entity POSTs; one key per 300, as the nonce memory holds 358 per key (§16)."""
    bodies = []
    for n in range(first, first + count):
        peer = SigningKey.generate(bytes((n // 300 + 100 + i) % 256 for i in range(32)))
        base = pages.prefill(peer.public_hex, port=7000, node_type=2, nonce=f"{n:064x}", now=now)
        page = dataclasses.replace(base, entity="posts", endpoint="posts", filters=filters_of(n))
        bodies.append(canonical.encode(pages.build_request(page, peer, MINT, difficulty=POST_POW)))
    return bodies


async def _post_latencies(base: str, bodies: list[bytes]) -> list[float]:
    took = []
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for body in bodies:
            started = time.perf_counter()
            answer = await client.post("/v0/c0/posts", content=body, headers=headers)
            took.append(time.perf_counter() - started)
            if answer.status_code != 200:
                raise RuntimeError(f"POST answered {answer.status_code}: {answer.text[:200]}")
    return took


def _percentiles(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return f"p50 {cuts[49] * 1000:7.2f} ms   p99 {cuts[98] * 1000:7.2f} ms"


def main() -> None:  # noqa: PLR0915 - one run, told in order
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mimrelay-bench-"))
    children: list[subprocess.Popen[bytes]] = []
    nats = NatsServer(root / "nats").start()
    postgres = PostgresServer(root / "pg", fsync=False).start()
    try:
        url = asyncio.run(fresh_database(postgres, "bench", migrated=True))
        now = int(time.time())
        seeded = asyncio.run(_seed_head(url, now))
        board, thread = seeded[0], seeded[1]
        port, static = free_port(), root / "static"
        env = {
            **os.environ,
            "MIM_NATS_URL": nats.url,
            "MIM_DATABASE_URL": url,
            "MIM_DATA_DIR": str(root / "data"),
            "MIM_LOG_LEVEL": "info",
            "MIM_LOG_FORMAT": "json",
            "MIM_GATEWAY_HOST": "127.0.0.1",
            "MIM_GATEWAY_PORT": str(port),
            "MIM_GATEWAY_LOCAL_PORT": "0",
            "MIM_GATEWAY_METRICS_PORT": "0",
            "MIM_GATEWAY_POST_MIN_POW": str(POST_POW),
            "MIM_GATEWAY_MAX_REQUESTS_PER_REMOTE": str(args.connections * 4),
        }
        log = root / "gateway.log"
        with log.open("wb") as sink:  # it makes the node key the export signs with
            gateway = spawn("services.gateway", env, stdout=sink.fileno())
        children.append(gateway)
        _wait_listening(port, gateway)
        cli = [sys.executable, "-m", "relay.cli", "export-static", str(static)]
        subprocess.run(cli, check=True, env=env, cwd=REPO, capture_output=True, timeout=120)
        nginx_port = free_port()
        (root / "tmp").mkdir()
        conf = root / "nginx.conf"
        conf.write_text(NGINX_CONF.format(root=root, port=nginx_port, static=static))
        nginx = subprocess.Popen([_ensure_nginx(), "-c", str(conf), "-e", str(root / "error.log")])
        children.append(nginx)
        _wait_listening(nginx_port, nginx)

        gw_base, nginx_base = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{nginx_port}"
        gw_page, nginx_page = _cache_page(gw_base), _cache_page(nginx_base)
        size = len(httpx.get(f"{gw_base}/{gw_page}").content)
        client = "wrk" if shutil.which("wrk") else "httpx"
        print(f"GET one cache page ({size} bytes), {client}, {args.connections} connections")
        print(f"  gateway served by {_server_stack(log)}")
        best = {"gateway": 0.0, "nginx": 0.0}
        for _ in range(3):
            best["gateway"] = max(
                best["gateway"], _load(f"{gw_base}/{gw_page}", args.seconds, args.connections)
            )
            best["nginx"] = max(
                best["nginx"], _load(f"{nginx_base}/{nginx_page}", args.seconds, args.connections)
            )
        print(f"  gateway {best['gateway']:10.0f} req/s")
        print(f"  nginx   {best['nginx']:10.0f} req/s")
        print(f"  gateway/nginx {best['gateway'] / best['nginx']:.2f}   (target >= 0.50)")

        copied = asyncio.run(_copy_many(url, board, thread, args.objects, now))
        print(f"\nPOST queries, {args.objects} more posts copied in ({copied:.1f} s)")
        many = asyncio.run(_fingerprints(url, args.queries))
        by_fp = _requests(
            args.queries,
            lambda n: (Filter(type="fingerprint", values=(many[n % len(many)],)),),
            int(time.time()),
        )
        by_time = _requests(
            args.queries,
            lambda n: (Filter(type="timestamp", values=(str(now - 600), str(int(time.time())))),),
            int(time.time()),
            first=args.queries + 300,
        )
        for name, bodies in (("fingerprint", by_fp), ("timestamp", by_time)):
            took = asyncio.run(_post_latencies(gw_base, bodies))
            print(f"  {name:12} {_percentiles(took)}   ({len(took)} requests)")
    finally:
        stop(children)
        postgres.stop()
        nats.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _fingerprints(url: str, count: int) -> list[str]:
    """``count`` fingerprints of stored posts, picked at random."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT fingerprint FROM objects WHERE kind = 'post' ORDER BY random() LIMIT $1", count
        )
        return [str(r["fingerprint"]) for r in rows]
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
