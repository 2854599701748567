"""The gateway seen from outside: signed pages, the cache crawl, POST checks and answers."""

from __future__ import annotations

import dataclasses
import random
import time

import httpx

from mim import canonical, create, pages
from mim import pow as mim_pow
from mim.entities import Address, ApiResponse, Filter
from mim.signing import SigningKey
from tests.helpers.store import running_pipeline, wait_until
from tests.services.gateway.conftest import (
    AUTHOR,
    DIFFICULTY,
    JSON,
    Running,
    cover,
    make,
    sample,
    store,
    store_address,
)
from tests.services.gateway.crawler import crawl

PEER = SigningKey.generate(bytes(range(40, 72)))
MINT = mim_pow.local_minter(random.Random(5).randrange)


def request_page(
    endpoint: str, filters: tuple[Filter, ...] | None = None, **changes: object
) -> bytes:
    base = pages.prefill(
        PEER.public_hex, port=7000, node_type=2, nonce=PEER.sign(str(time.time_ns()))[:64],
        now=int(time.time()),
    )  # fmt: skip
    page = dataclasses.replace(base, entity=endpoint, endpoint=endpoint, filters=filters, **changes)  # type: ignore[arg-type]
    return canonical.encode(pages.build_request(page, PEER, MINT))


async def test_status_node_and_safeguards(running: Running) -> None:
    """Status answers 200 empty, the node page is signed by the node, odd paths get 204, other
    methods 405."""
    async with httpx.AsyncClient(base_url=running.url) as client:
        status = await client.get("/v0/status")
        assert (status.status_code, status.content) == (200, b"")
        node = canonical.loads(ApiResponse, (await client.get("/v0/node")).content)
        assert pages.verify_page(node) == pages.node_id(running.gateway.key.public_hex)
        assert node.endpoint == "node"
        assert (await client.get("/v0/c0/posts/../../etc/passwd")).status_code == 204
        assert (await client.get("/v0/c0/posts/nothing.json")).status_code == 204
        assert (await client.get("/v0/c0/posts/")).status_code == 204
        assert (await client.delete("/v0/node")).status_code == 405
        boot = canonical.loads(ApiResponse, (await client.get("/v0/bootstrappers")).content)
        pages.verify_page(boot)


async def test_crawl_finds_exactly_the_head(running: Running, fresh_database: str) -> None:
    """A client crawling index.json and every cache, index and manifest page verifies all of
    them and finds exactly the stored objects inside the head, and nothing older."""
    now = int(time.time())
    objects = sample(now)
    await store(fresh_database, objects, now - 30)
    old = make("board", {"name": "too old"}, now - 40 * 86400)
    await store(fresh_database, [old], now - 20 * 86400)
    await store_address(
        fresh_database, Address(location="192.0.2.9", port=9, entity_version=1), now
    )
    await cover(running.gateway, now)
    async with httpx.AsyncClient(base_url=running.url) as client:
        result = await crawl(client)
    expected: dict[str, set[str]] = {}
    for obj in objects:
        expected.setdefault(obj.kind, set()).add(obj.fingerprint)
    assert result.objects == expected
    assert result.node_id == pages.node_id(running.gateway.key.public_hex)
    assert len(result.addresses) == 1 and '"location":"192.0.2.9"' in result.addresses[0]


async def test_cache_pages_are_gzipped_when_asked(running: Running, fresh_database: str) -> None:
    """With Accept-Encoding gzip a cache page comes compressed and decodes to the same page."""
    now = int(time.time())
    await store(fresh_database, sample(now), now - 30)
    await cover(running.gateway, now)
    async with httpx.AsyncClient(base_url=running.url) as client:
        index = await client.get("/v0/c0/posts/index.json", headers={"Accept-Encoding": "gzip"})
        assert index.headers["content-encoding"] == "gzip"
        pages.verify_page(canonical.loads(ApiResponse, index.content))


async def test_a_container_written_with_plain_pages_is_still_served(running: Running) -> None:
    """A container whose pages were kept uncompressed (as before they were kept gzip-compressed)
    is served as it was written, gzip-encoded when asked and plain otherwise, until it expires."""
    containers = running.gateway.containers
    rid = "e" * 64
    page = running.gateway.signed(pages.node_page(running.gateway.base(int(time.time()))))
    assert await containers.registry.claim(rid, b"1") is not None
    assert running.gateway.nc is not None
    js = running.gateway.nc.jetstream()
    held = await js.object_store(running.gateway.layout.container_pages_bucket)
    await held.put(f"{rid}/0.json", page)
    async with httpx.AsyncClient(base_url=running.url) as client:
        path = f"/v0/responses/post_{rid}/0.json"
        plain = await client.get(path, headers={"Accept-Encoding": "identity"})
        packed = await client.get(path, headers={"Accept-Encoding": "gzip"})
    assert plain.status_code == packed.status_code == 200
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert plain.content == packed.content == page


async def test_post_refusals_name_the_reason(running: Running) -> None:
    """Stale timestamps, reused nonces, weak or unsigned PoW, wrong content type, bad JSON, a
    one-value timestamp filter and a 50 MB body each get a 4xx with a reason, never a 5xx."""
    url = "/v0/c0/boards"
    good = request_page("boards")
    stale = request_page("boards", timestamp=int(time.time()) - 3600)
    weak_page = dataclasses.replace(
        pages.prefill(
            PEER.public_hex, port=7000, node_type=2, nonce="f" * 64, now=int(time.time())
        ),
        entity="boards",
    )
    weak = canonical.encode(pages.build_request(weak_page, PEER, MINT, difficulty=6))
    signed = canonical.loads(ApiResponse, request_page("boards"))
    unsigned = canonical.encode(
        dataclasses.replace(signed, proof_of_work=signed.proof_of_work.rsplit(":", 1)[0] + ":")
    )
    one_value = request_page("boards", filters=(Filter(type="timestamp", values=("5",)),))
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
        assert (await client.post(url, content=good, headers=JSON)).status_code == 200
        cases = {
            "request.nonce_reused": await client.post(url, content=good, headers=JSON),
            "request.timestamp": await client.post(url, content=stale, headers=JSON),
            "pow.strength": await client.post(url, content=weak, headers=JSON),
            "pow.unsigned": await client.post(url, content=unsigned, headers=JSON),
            "request.content_type": await client.post(
                url, content=request_page("boards"), headers={"Content-Type": "text/plain"}
            ),
            "json.syntax": await client.post(url, content=b"{not json", headers=JSON),
            "filter.timestamp_values": await client.post(url, content=one_value, headers=JSON),
            "http.body_size": await client.post(url, content=b" " * (50 << 20), headers=JSON),
        }
    for rule, response in cases.items():
        assert 400 <= response.status_code < 500, (rule, response.status_code)
        assert response.json()["error"]["rule"] == rule
        assert response.json()["error"]["reason"]


async def test_post_filters_and_embeds(running: Running, fresh_database: str) -> None:
    """Entity POSTs answer with signed pages holding what the timestamp and fingerprint filters
    and the embeds ask for."""
    now = int(time.time())
    await running.gateway.regenerate(now - 10)
    objects = sample(now)
    key, board, thread, post, reply, _vote = objects
    await store(fresh_database, objects, now - 5)
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
        timed = await client.post(
            "/v0/c0/posts",
            content=request_page("posts", (Filter(type="timestamp", values=(str(now - 8), "0")),)),
            headers=JSON,
        )
        page = canonical.loads(ApiResponse, timed.content)
        pages.verify_page(page)
        assert page.endpoint == "post_response"
        assert {p.fingerprint for p in page.response.posts or ()} == {
            post.fingerprint,
            reply.fingerprint,
        }
        embedded = await client.post(
            "/v0/c0/boards",
            content=request_page(
                "boards",
                (
                    Filter(type="fingerprint", values=(board.fingerprint,)),
                    Filter(type="embed", values=("threads", "keys")),
                ),
            ),
            headers=JSON,
        )
        page = canonical.loads(ApiResponse, embedded.content)
        pages.verify_page(page)
        assert [b.fingerprint for b in page.response.boards or ()] == [board.fingerprint]
        assert [t.fingerprint for t in page.response.threads or ()] == [thread.fingerprint]
        assert [k.fingerprint for k in page.response.keys or ()] == [key.fingerprint]
        node = await client.post("/v0/node", content=request_page("node"), headers=JSON)
        assert canonical.loads(ApiResponse, node.content).endpoint == "node"
    gw = running.gateway

    async def sender_stored() -> bool:
        sql = "SELECT count(*) FROM addresses WHERE first_party AND port = 7000"
        return int(await gw.pool.fetchval(sql)) == 1

    async with running_pipeline(gw.settings.nats_url, fresh_database, gw.layout):
        await wait_until("the sender stored first-party", sender_stored)


async def test_live_tail_serves_what_committed_after_the_caches_were_read(
    running: Running, fresh_database: str
) -> None:
    """An object stamped before the last cache generation but committed after it (so in no
    cache) is still answered by a time-range POST from before that generation."""
    now = int(time.time())
    await running.gateway.regenerate(now)
    late = sample(now)
    await store(fresh_database, late, now - 3)  # arrived "at now - 3", visible only now
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
        answer = await client.post(
            "/v0/c0/posts",
            content=request_page("posts", (Filter(type="timestamp", values=(str(now - 60), "0")),)),
            headers=JSON,
        )
    page = canonical.loads(ApiResponse, answer.content)
    pages.verify_page(page)
    wanted = {o.fingerprint for o in late if o.kind == "post"}
    assert wanted
    assert {p.fingerprint for p in page.response.posts or ()} == wanted


async def test_ownerless_boards_are_served_as_their_proofs_cover_them(
    running: Running, fresh_database: str
) -> None:
    """A board whose proofs cover `"board_owners":[]` submitted as `null`, and one whose proofs
    cover `null` submitted as `[]`, are stored and served in the spelling their proofs cover, so a
    Go verifier re-marshalling what it decodes accepts both (§4.5, §20.3)."""
    now = int(time.time())
    empty = make("board", {"name": "owners []"}, now - 100)
    nil = create.create("board", {"name": "owners null", "board_owners": None}, AUTHOR,
                        DIFFICULTY, now - 100, MINT)  # fmt: skip
    sent = [
        canonical.dumps(empty).replace('"board_owners":[]', '"board_owners":null'),
        canonical.dumps(nil).replace('"board_owners":null', '"board_owners":[]'),
    ]
    gw = running.gateway

    async def stored() -> bool:
        return int(await gw.pool.fetchval("SELECT count(*) FROM objects")) == 2

    async with (
        httpx.AsyncClient(base_url=running.local, timeout=30) as client,  # the operator's API
        running_pipeline(gw.settings.nats_url, fresh_database, gw.layout),
    ):
        body = "[" + ",".join(f'{{"kind":"board","object":{raw}}}' for raw in sent) + "]"
        answer = await client.post("/api/submit", content=body, headers=JSON)
        assert answer.status_code == 202, answer.text
        await wait_until("both boards stored", stored)
    rows = await gw.pool.fetch("SELECT fingerprint, body FROM objects")
    assert {r["fingerprint"]: r["body"] for r in rows} == {
        empty.fingerprint: canonical.dumps(empty),
        nil.fingerprint: canonical.dumps(nil),
    }
    await cover(running.gateway, int(time.time()))
    async with httpx.AsyncClient(base_url=running.url) as client:
        result = await crawl(client)  # checks each board as a Go verifier would
    assert result.objects["board"] == {empty.fingerprint, nil.fingerprint}
