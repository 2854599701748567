"""Cache files made from the stored bytes are, byte for byte, the pages the protocol core makes
from the decoded objects, and they verify."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

import asyncpg
import pytest

from mim import canonical, create, pages
from mim import pow as mim_pow
from mim.entities import PLURALS, ApiResponse, Caching, Kind, Provable, ResultCache
from mim.signing import SigningKey
from relay.caches import build, files
from relay.caches.files import Signer
from relay.db import storing
from relay.db.objects import CacheEntry
from tests.helpers.objects import signed_posts
from tests.helpers.servers import TemplateSetup
from tests.helpers.store import migrate_template

KEY = SigningKey.generate(bytes(range(9, 41)))
NODE = SigningKey.generate(bytes(range(50, 82)))
MINT = mim_pow.local_minter(random.Random(13).randrange)
SIGNER = Signer(NODE, 8090, pages.NODE_TYPE_LIVE)
NODE_ID = pages.node_id(NODE.public_hex)
NOW = 1_700_000_000


@pytest.fixture
def database_template_setup() -> TemplateSetup | None:
    return migrate_template


def _forum() -> list[Provable]:
    """One object of every kind, with text that needs escaping and a board of each owner form."""

    def make(kind: str, values: dict[str, object], at: int) -> Provable:
        return create.create(kind, values, KEY, 2, at, MINT)

    key = make("key", {"name": 'ünïcode <key> & "quotes"'}, NOW - 100)
    board = make("board", {"name": "board\u2028line"}, NOW - 90)
    nil_board = make("board", {"name": "nil owners", "board_owners": None}, NOW - 89)
    thread = make(
        "thread", {"board": board.fingerprint, "name": "tab\there", "body": "\x01"}, NOW - 80
    )
    post = make(
        "post", {"board": board.fingerprint, "thread": thread.fingerprint, "body": "é"}, NOW - 70
    )
    vote = make(
        "vote",
        {"board": board.fingerprint, "thread": thread.fingerprint, "target": post.fingerprint,
         "typeclass": 1, "type": 1},
        NOW - 60,
    )  # fmt: skip
    trust = make(
        "truststate",
        {"target": key.fingerprint, "typeclass": 1, "type": 1, "domain": board.fingerprint},
        NOW - 50,
    )
    return [key, board, nil_board, thread, post, vote, trust]


def _expected(kind: Kind, objects: Sequence[Provable], result: ResultCache) -> dict[str, bytes]:
    """What ``mim.pages`` makes of the decoded objects for the same cache."""
    cid = result.response_url.removeprefix("cache_")
    base = replace(
        SIGNER.base(nonce=files.cache_nonce(cid), timestamp=result.ends_at),
        filters=pages.timestamp_filter(result.starts_from, result.ends_at),
        starts_from=result.starts_from,
        ends_at=result.ends_at,
        caching=Caching(entity_counts=pages.entity_counts(objects)),
    )
    made = pages.cache_pages(kind, objects, base)
    return {name: canonical.encode(pages.sign_page(page, NODE)) for name, page in made.items()}


def _rows(objects: Sequence[Provable], when: int) -> list[tuple[CacheEntry, bytes]]:
    rows = []
    for obj in objects:
        row = storing.row_of(obj)
        entry = CacheEntry(row.fingerprint, row.creation, row.last_update, row.board, row.thread,
                           row.target, when)  # fmt: skip
        rows.append((entry, canonical.encode(obj)))
    return rows


async def test_files_read_from_the_store_are_what_the_core_makes(fresh_database: str) -> None:
    """Every kind's cache, read from the objects table one page at a time, has exactly the files
    `mim.pages` makes and signs for the decoded objects (entity, index and manifest pages), the
    counts it reports, and each file verifies."""
    objects = _forum()
    pool = await asyncpg.create_pool(fresh_database, min_size=2, max_size=2)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await storing.store_objects(conn, objects, NOW)
        kept: dict[str, bytes] = {}

        async def put(folder: str, name: str, body: bytes, size: int) -> None:
            assert len(body) == size
            kept[name] = body

        for kind in ("key", "board", "thread", "post", "vote", "truststate"):
            kept.clear()
            made = await build.build(pool, kind, NOW - 10, NOW + 10, SIGNER, finish=bytes, put=put)
            assert made is not None
            stored = await pool.fetch(
                "SELECT body FROM objects WHERE kind = $1 ORDER BY last_referenced, fingerprint",
                kind,
            )
            decoded = [next(o for o in objects if canonical.dumps(o) == r["body"]) for r in stored]
            assert kept == _expected(kind, decoded, made.result), kind
            assert (made.pages, made.index_pages, made.manifest_pages) == (1, 1, 1)
            assert made.bytes == sum(len(body) for body in kept.values())
            for body in kept.values():
                assert pages.verify_page(canonical.loads(ApiResponse, body)) == NODE_ID
    finally:
        await pool.close()


def test_pages_split_and_number_as_the_core_does() -> None:
    """901 posts make three entity pages (400, 400, 101), index and manifest pages listing them
    with their page numbers, all equal to what `mim.pages` makes."""
    posts = signed_posts(901, 3, key=KEY, difficulty=1, start=NOW - 2000, label="many")
    built = files.object_files("post", _rows(posts, NOW), NOW - 3000, NOW, SIGNER)
    assert sorted(built.files) == ["0.json", "1.json", "2.json", "index/0.json", "manifest/0.json"]
    assert (built.count(""), built.count("index/"), built.count("manifest/")) == (3, 1, 1)
    assert built.files == _expected("post", posts, built.result)


def test_a_cache_built_twice_has_the_same_bytes() -> None:
    """The same objects over the same window give the same cache ID and the same file bytes
    (a builder that takes over rebuilds what the one before it wrote, unchanged)."""
    posts = signed_posts(5, 4, key=KEY, difficulty=1, start=NOW - 100, label="twice")
    first = files.object_files("post", _rows(posts, NOW - 1), NOW - 10, NOW, SIGNER)
    second = files.object_files("post", _rows(posts, NOW - 1), NOW - 10, NOW, SIGNER)
    assert first == second
    other = files.object_files("post", _rows(posts[:4], NOW - 1), NOW - 10, NOW, SIGNER)
    assert other.result.response_url != first.result.response_url


def test_index_file_lists_the_caches_signed() -> None:
    """An endpoint's index.json is signed by the node, pregenerated, and lists the caches given,
    in order."""
    posts = signed_posts(2, 5, key=KEY, difficulty=1, start=NOW - 100, label="index")
    built = files.object_files("post", _rows(posts, NOW - 1), NOW - 10, NOW, SIGNER)
    body = files.index_file("post", [built.result], SIGNER, timestamp=NOW, nonce="n" * 64)
    index = canonical.loads(ApiResponse, body)
    assert pages.verify_page(index) == NODE_ID
    assert index.caching.pregenerated and index.entity == PLURALS["post"]
    assert index.results == (built.result,)
    assert index.timestamp == NOW
