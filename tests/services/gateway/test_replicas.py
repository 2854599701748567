"""Gateway replicas of one node as an operator runs them: separate processes over one NATS and
one database, each on its own ports, requests going to one or the other as a load balancer would
send them. What one remembers of a request, the other knows; one of them builds the caches, all of
them serve them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import nats

from mim import canonical
from mim.entities import ApiResponse, Filter
from relay.bus import Layout
from relay.db import storing
from tests.helpers.gateway import (
    LEASE_SECONDS,
    REQUEST_POW,
    Gateway,
    error_of,
    gateway,
    replica,
    request,
)
from tests.helpers.link import Link
from tests.helpers.store import wait_until
from tests.services.gateway.conftest import JSON, make, store
from tests.services.gateway.conftest import sample as forum
from tests.services.gateway.crawler import ENDPOINTS, crawl

SHARED = {"MIM_GATEWAY_POST_MIN_POW": str(REQUEST_POW)}


@contextmanager
def _two(
    nats_url: str, database: str, prefix: str, data_dir: Path, **settings: str
) -> Iterator[tuple[Gateway, Gateway]]:
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(
                gateway(nats_url, database, prefix, data_dir / name, **SHARED, **settings)
            )
            for name in ("a", "b")
        )
        yield a, b


def _client(url: str, remote: str) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=remote)
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=30)


async def test_a_nonce_spent_on_one_replica_is_refused_on_the_other(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """A POST answered by replica A, sent again to replica B, is refused 400 as a reused nonce;
    the same request with a new nonce is answered by B."""
    with _two(nats_url, fresh_database, stream_prefix, tmp_path) as (a, b):
        body = request("node")
        async with httpx.AsyncClient(timeout=30) as client:
            first = await client.post(f"{a.url}/v0/node", content=body, headers=JSON)
            replayed = await client.post(f"{b.url}/v0/node", content=body, headers=JSON)
            fresh = await client.post(f"{b.url}/v0/node", content=request("node"), headers=JSON)
    assert first.status_code == 200
    assert replayed.status_code == 400
    assert error_of(replayed)["rule"] == "request.nonce_reused"
    assert fresh.status_code == 200


async def test_a_remote_over_its_lease_on_one_replica_is_refused_on_the_other(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """With one remote leased node-wide, a remote served by A is refused 429 by B while a second
    remote holds the lease, and with one request in flight per remote, a remote whose slow POST
    is in flight on A is refused 429 by B until that POST is answered."""
    settings = {"MIM_GATEWAY_MAX_REMOTES": "1", "MIM_GATEWAY_MAX_REQUESTS_PER_REMOTE": "1"}
    with _two(nats_url, fresh_database, stream_prefix, tmp_path, **settings) as (a, b):
        async with _client(a.url, "127.0.0.2") as on_a, _client(b.url, "127.0.0.3") as on_b:
            held = await on_a.get("/v0/node")
            other = await on_b.get("/v0/node")
        async with _client(b.url, "127.0.0.2") as same_on_b:
            port = int(a.url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.0.2", 0)
            )
            writer.write(
                b"POST /v0/c0/boards HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 2\r\n\r\n{"
            )
            await writer.drain()
            for _ in range(200):  # until A has taken the POST's headers
                busy = await same_on_b.get("/v0/node")
                if busy.status_code != 200:
                    break
                await asyncio.sleep(0.05)
            writer.write(b"}")
            answered = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            await asyncio.sleep(0.2)
            after = await same_on_b.get("/v0/node")
    assert held.status_code == 200
    assert other.status_code == 429
    assert error_of(other) == {
        "field": "remote",
        "rule": "http.lease",
        "reason": "too many remotes",
    }
    assert busy.status_code == 429
    assert error_of(busy)["reason"] == "too many requests in flight"
    assert answered.startswith(b"HTTP/1.1 400")
    assert after.status_code == 200


async def test_a_container_written_by_one_replica_is_served_by_the_other(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """A POST answer too large for one page, answered by A, is a container whose every page B
    serves with the same bytes as A: gzip-encoded to a client that takes it, plain to one that
    does not; the container's object store holds less than the pages it serves."""
    now = int(time.time())
    board = make("board", {"name": "container"}, now - 100)
    threads = [
        make("thread", {"board": board.fingerprint, "name": f"t{n}"}, now - 90) for n in range(450)
    ]
    await store(fresh_database, [board, *threads], now - 5)
    with _two(nats_url, fresh_database, stream_prefix, tmp_path) as (a, b):
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.post(
                f"{a.url}/v0/c0/threads",
                content=request("threads", (Filter(type="timestamp", values=("0", "0")),)),
                headers=JSON,
            )
            face = canonical.loads(ApiResponse, answer.content)
            assert face.results, answer.text
            folder = face.results[0].response_url
            pages = ["0.json", "1.json", "index/0.json", "manifest/0.json"]
            from_a = [await client.get(f"{a.url}/v0/responses/{folder}/{p}") for p in pages]
            from_b = [await client.get(f"{b.url}/v0/responses/{folder}/{p}") for p in pages]
            plain = [
                await client.get(
                    f"{b.url}/v0/responses/{folder}/{p}", headers={"Accept-Encoding": "identity"}
                )
                for p in pages
            ]
            missing = await client.get(f"{b.url}/v0/responses/post_{'0' * 64}/0.json")
        nc = await nats.connect(nats_url)
        try:
            stream = f"OBJ_{Layout(stream_prefix).container_pages_bucket}"
            held = (await nc.jetstream().stream_info(stream)).state.bytes
        finally:
            await nc.close()
    assert [r.status_code for r in from_b] == [200] * len(pages)
    assert [r.content for r in from_b] == [r.content for r in from_a]
    assert [r.headers.get("content-encoding") for r in from_b] == ["gzip"] * len(pages)
    assert [r.headers.get("content-encoding") for r in plain] == [None] * len(pages)
    assert [r.content for r in plain] == [r.content for r in from_b]
    assert held < sum(len(r.content) for r in plain) / 2
    threads_served = {
        t.fingerprint
        for r in from_b[:2]
        for t in canonical.loads(ApiResponse, r.content).response.threads or ()
    }
    assert threads_served == {t.fingerprint for t in threads}
    assert missing.status_code == 204


async def _threads_in(client: httpx.AsyncClient, url: str, folder: str) -> set[str]:
    """Fingerprints of the threads on every entity page of a container."""
    found: set[str] = set()
    n = 0
    while (got := await client.get(f"{url}/v0/responses/{folder}/{n}.json")).status_code == 200:
        found |= {
            t.fingerprint for t in canonical.loads(ApiResponse, got.content).response.threads or ()
        }
        n += 1
    return found


async def test_a_later_answer_names_the_earlier_container_and_reads_only_what_is_new(
    nats_url: str, fresh_database: str, stream_prefix: str, tmp_path: Path
) -> None:
    """A time range answered by A as a container is named again by B's answer to a later range
    from the same start: B's own container holds only what was stored since, including an object
    stamped before A's read whose transaction committed after it, and the counts add up. A third
    answer names both and does not read that late object again."""
    now = int(time.time())
    board = make("board", {"name": "chain"}, now - 100)
    first = [
        make("thread", {"board": board.fingerprint, "name": f"a{n}"}, now - 90) for n in range(450)
    ]
    late = make("thread", {"board": board.fingerprint, "name": "late"}, now - 90)
    await store(fresh_database, [board, *first], now - 20)
    since = (Filter(type="timestamp", values=(str(now - 60), "0")),)
    conn = await asyncpg.connect(fresh_database)
    try:
        with _two(nats_url, fresh_database, stream_prefix, tmp_path) as (a, b):
            async with httpx.AsyncClient(timeout=30) as client:
                pending = conn.transaction()
                await pending.start()
                await storing.store_objects(conn, [late], now - 10)
                answer = await client.post(
                    f"{a.url}/v0/c0/threads", content=request("threads", since), headers=JSON
                )
                earlier = canonical.loads(ApiResponse, answer.content)
                await pending.commit()
                await asyncio.sleep(1.1)  # past the second A's read covered
                second = [
                    make("thread", {"board": board.fingerprint, "name": f"b{n}"}, now - 80)
                    for n in range(450)
                ]
                await store(fresh_database, second, int(time.time()))
                answer = await client.post(
                    f"{b.url}/v0/c0/threads", content=request("threads", since), headers=JSON
                )
                later = canonical.loads(ApiResponse, answer.content)
                assert earlier.results and later.results, answer.text
                held = [await _threads_in(client, b.url, r.response_url) for r in later.results]
                counted = (
                    b.metric("mim_gateway_containers_reused_total"),
                    b.metric("mim_gateway_containers_late_objects_total"),
                )
                answer = await client.post(
                    f"{a.url}/v0/c0/threads", content=request("threads", since), headers=JSON
                )
                third = canonical.loads(ApiResponse, answer.content)
                late_on_a = a.metric("mim_gateway_containers_late_objects_total")
    finally:
        await conn.close()
    assert len(earlier.results) == 1
    assert later.results[0].response_url == earlier.results[0].response_url
    assert len(later.results) == 2
    assert held[0] == {t.fingerprint for t in first}
    assert held[1] == {t.fingerprint for t in [*second, late]}
    assert later.starts_from == earlier.results[0].starts_from
    assert [(c.name, c.count) for c in later.caching.entity_counts or ()] == [("thread", 901)]
    assert counted == (1.0, 1.0)
    # a third answer names both; the late object is in B's container, so it is not read again
    assert [r.response_url for r in third.results or ()] == [r.response_url for r in later.results]
    assert late_on_a == 0


async def _files(client: httpx.AsyncClient) -> dict[str, bytes]:
    """Every file a crawl of ``client``'s node reads: each endpoint's index.json and every page
    of every cache it lists."""
    found: dict[str, bytes] = {}
    for endpoint in [*ENDPOINTS, "v0/addresses"]:
        index = (await client.get(f"/{endpoint}/index.json")).content
        found[f"{endpoint}/index.json"] = index
        for cache in canonical.loads(ApiResponse, index).results or ():
            for folder in ("", "index/", "manifest/"):
                n = 0
                while True:
                    path = f"{endpoint}/{cache.response_url}/{folder}{n}.json"
                    got = await client.get(f"/{path}")
                    if got.status_code != 200:
                        break
                    found[path] = got.content
                    n += 1
    return found


async def _same_generation(one: Gateway, other: Gateway) -> None:
    """Wait until both replicas serve the same index.json for every endpoint."""

    async def agreed() -> bool:
        async with httpx.AsyncClient(timeout=10) as client:
            for endpoint in ENDPOINTS:
                first = await client.get(f"{one.url}/{endpoint}/index.json")
                second = await client.get(f"{other.url}/{endpoint}/index.json")
                if first.status_code != 200 or first.content != second.content:
                    return False
        return True

    await wait_until("both replicas on one generation", agreed)


async def test_replicas_serve_the_same_bytes_and_each_crawls_clean(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """Two replicas of one node serve byte-identical index and cache files for the same
    generation, the crawler verifies every page from each, and exactly one of them builds."""
    now = int(time.time())
    objects = forum(now - 600)
    await store(fresh_database, objects, now - 300)
    with (
        replica(nats_url, fresh_database, stream_prefix, tmp_path / "a") as a,
        replica(nats_url, fresh_database, stream_prefix, tmp_path / "b") as b,
    ):
        await _same_generation(a, b)
        served = []
        for one in (a, b):
            async with httpx.AsyncClient(base_url=one.url, timeout=10) as client:
                crawled = await crawl(client)
                served.append(await _files(client))
            assert {fp for found in crawled.objects.values() for fp in found} == {
                o.fingerprint for o in objects
            }
        builders = [a.building, b.building]
    assert served[0] == served[1]
    assert len(served[0]) > len(ENDPOINTS)
    assert builders.count(True) == 1


async def test_killing_the_builder_hands_building_to_the_other(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """When the replica that builds is killed (no chance to give the lease up), the other
    takes the lease within its time (plus one ask) and its caches take in what is stored
    afterwards, which the crawler then finds."""
    with (
        replica(nats_url, fresh_database, stream_prefix, tmp_path / "a") as a,
        replica(nats_url, fresh_database, stream_prefix, tmp_path / "b") as b,
    ):
        await _same_generation(a, b)
        builder, other = (a, b) if a.building else (b, a)
        assert not other.building
        builder.proc.send(signal.SIGKILL)
        killed = time.monotonic()
        await asyncio.to_thread(other.proc.wait_for, "cache_builder_acquired", 30)
        took_over = time.monotonic() - killed
        later = int(time.time())
        board = make("board", {"name": "after the handover"}, later)
        await store(fresh_database, [board], later)

        async def served() -> bool:
            async with httpx.AsyncClient(base_url=other.url, timeout=10) as client:
                return board.fingerprint in (await crawl(client)).objects.get("board", set())

        await wait_until("the board in the new builder's caches", served)
        generated = other.proc.events("caches_generated")
    assert took_over <= LEASE_SECONDS + 1.5  # the lease's time, one ask, and a little slack
    assert generated, "the replica that took over published no generation"


async def test_a_failing_build_shows_in_logs_metrics_and_health(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """A cache build that raises (its table gone) is logged with the error, counted, retried,
    and after the set number of failures in a row turns /healthz to 503 naming the caches; once
    the table is back the next generation succeeds and health is 200 again."""
    failures_unhealthy = 2
    extra = {"MIM_GATEWAY_CACHE_FAILURES_UNHEALTHY": str(failures_unhealthy)}
    with replica(nats_url, fresh_database, stream_prefix, tmp_path, **extra) as one:

        async def healthy() -> bool:
            return one.health() == 200

        await wait_until("health 200", healthy, within=30)
        await store(fresh_database, forum(int(time.time())), int(time.time()))
        await _execute(fresh_database, "ALTER TABLE cache_files RENAME TO cache_files_away")

        async def unhealthy() -> bool:
            return one.health() == 503

        await wait_until("health 503", unhealthy, within=30)
        status, body = one.health_report()
        failed = one.proc.last("caches_generation_failed")
        failures = one.metric("mim_gateway_cache_failures_total")
        await _execute(fresh_database, "ALTER TABLE cache_files_away RENAME TO cache_files")
        await wait_until("health 200 again", healthy, within=30)
        recovered = one.proc.last("caches_recovered")
    assert status == 503 and "caches" in json.dumps(body)
    assert "cache_files" in failed["error"]
    assert failures >= failures_unhealthy
    assert recovered["after_failures"] >= failures_unhealthy


async def test_the_caches_are_tried_again_as_soon_as_the_database_is_back(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """While PostgreSQL cannot be reached, the cache upkeep fails and its pause doubles; once the
    database answers again, the gateway does not sit out the rest of that pause: its caches load
    at the next tick and /healthz is 200 again well before the pause would have ended."""
    url = urlsplit(fresh_database)
    assert url.hostname is not None and url.port is not None
    with Link(url.hostname, url.port) as link:
        user = url.netloc.rpartition("@")[0]
        through = urlunsplit(url._replace(netloc=f"{user}@127.0.0.1:{link.port}"))
        extra = {
            "MIM_GATEWAY_CACHE_INTERVAL_SECONDS": "60",  # pauses double up to a minute
            "MIM_GATEWAY_CACHE_FAILURES_UNHEALTHY": "2",
            "MIM_DEPENDENCY_CHECK_SECONDS": "0.5",
        }
        with gateway(nats_url, through, stream_prefix, tmp_path, **extra) as one:

            async def healthy() -> bool:
                return one.health() == 200

            await wait_until("health 200", healthy, within=30)
            link.cut()

            async def long_pause() -> bool:
                failed = one.proc.events("caches_generation_failed")
                return bool(failed) and failed[-1]["retry_s"] >= 16

            await wait_until("a pause of 16 s", long_pause, within=60)
            paused = time.monotonic()
            status, body = one.health_report()
            link.mend()
            await wait_until("health 200 again", healthy, within=30)
            back = time.monotonic() - paused
            early = one.proc.events("caches_retry_early")
            recovered = one.proc.last("caches_recovered")
    assert status == 503
    assert "postgres unreachable" in json.dumps(body) and "caches" in json.dumps(body)
    assert back < 8, f"healthy again {back:.1f} s after the database came back"
    assert [e["reason"] for e in early] == ["dependency back"]
    assert recovered["after_failures"] >= 5


async def _execute(database: str, sql: str) -> None:
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
