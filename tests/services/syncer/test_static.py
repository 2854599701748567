"""Static remotes served by a stock web server: an exported node, and a peer serving bad pages."""

from __future__ import annotations

import asyncio
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

from services.syncer.peers import parse_remote

from mim import canonical, pages
from mim.entities import (
    Answer,
    ApiResponse,
    PageManifest,
    PageManifestEntity,
    Pagination,
    Post,
    Provable,
    ResultCache,
)
from mim.signing import SigningKey
from relay.db import identity
from tests.helpers.procs import export_static
from tests.services.syncer.conftest import Nodes
from tests.services.syncer.node import Node, forum, make


@asynccontextmanager
async def file_server(directory: Path) -> AsyncIterator[str]:
    """``python -m http.server`` on a free loopback port serving ``directory``; yields host:port."""
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
        "--directory", str(directory),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = (await asyncio.wait_for(server.stdout.readline(), 20)).decode()
        port = re.search(r"port (\d+)", line)
        assert port, line
        yield f"127.0.0.1:{port.group(1)}"
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 10)


def static_node_files(
    directory: Path, key: SigningKey, now: int, node_type: int = pages.NODE_TYPE_STATIC
) -> ApiResponse:
    """Write ``v0/status`` and a signed ``v0/node`` of a static ``node_type``; return the base."""
    base = pages.prefill(
        key.public_hex, port=1, node_type=node_type, nonce=secrets.token_hex(32), now=now
    )
    (directory / "v0").mkdir(parents=True, exist_ok=True)
    (directory / "v0" / "status").write_bytes(b"")
    node = canonical.encode(pages.sign_page(pages.node_page(base), key))
    (directory / "v0" / "node").write_bytes(node)
    return base


async def node_key(node: Node) -> SigningKey:
    seed = await node.fetchval("SELECT value FROM node_state WHERE key = $1", identity.NODE_KEY)
    return SigningKey.from_seed_hex(seed)


async def test_static_export_is_synced_like_a_static_node(nodes: Nodes, tmp_path: Path) -> None:
    """A's head exported with ``mimrelay export-static`` and served by python -m http.server is
    read with GETs only, and B then holds A's objects."""
    a, b = await nodes("A"), await nodes("B")
    now = int(time.time())
    objects = forum(now, "static")
    await a.hold(objects)
    out = tmp_path / "export"
    await export_static(a.database_url, out)
    static_node_files(out, await node_key(a), now)
    async with file_server(out) as where, b.syncer() as syncer:
        report = await syncer.sync(parse_remote(f"http://{where}"))
    assert report.ok, report.summary()
    assert report.node_type == 255
    assert "post" not in report.tally.pages  # no POST to a static node
    await b.wait_holding(objects)


def _entity_page(base: ApiResponse, n: int, post: Provable) -> ApiResponse:
    return replace(
        base,
        entity="posts",
        endpoint="posts",
        pagination=Pagination(pages=3, current_page=n),
        response=Answer(posts=(post,)),  # type: ignore[arg-type]
    )


async def test_bad_pages_are_counted_and_skipped(nodes: Nodes, tmp_path: Path) -> None:
    """A peer serving garbage JSON, a forged page signature and a tampered object loses those
    pages (counted by reason), its one good page is taken, and what B held is unchanged."""
    b = await nodes("B")
    now = int(time.time())
    held = forum(now, "held")
    await b.hold(held)
    victim = held[-1]
    assert isinstance(victim, Post)
    tampered = replace(victim, body="rewritten by a stranger", last_update=now)
    board, thread = held[1].fingerprint, held[2].fingerprint
    forged = make("post", {"board": board, "thread": thread, "body": "never seen"}, now - 5)
    genuine = make("post", {"board": board, "thread": thread, "body": "welcome"}, now - 4)

    peer = SigningKey.generate(secrets.token_bytes(32))
    root = tmp_path / "peer"
    base = static_node_files(root, peer, now)
    cid = "cache_" + "ab" * 32
    folder = root / "v0" / "c0" / "posts"
    (folder / cid / "manifest").mkdir(parents=True)
    index = pages.endpoint_index(
        "posts", base, [ResultCache(response_url=cid, starts_from=now - 3600, ends_at=now)]
    )
    (folder / "index.json").write_bytes(canonical.encode(pages.sign_page(index, peer)))
    listed = [
        ("f" * 64, 0),
        (forged.fingerprint, 0),
        (victim.fingerprint, now),
        (genuine.fingerprint, 0),
    ]
    manifest = replace(
        base,
        entity="posts",
        endpoint="manifest",
        response=Answer(
            posts_manifest=tuple(
                PageManifest(
                    page_number=n, entities=(PageManifestEntity(fingerprint=fp, last_update=lu),)
                )
                for n, (fp, lu) in enumerate(listed)
            )
        ),
    )
    (folder / cid / "manifest" / "0.json").write_bytes(
        canonical.encode(pages.sign_page(manifest, peer))
    )

    def sign(page: ApiResponse) -> bytes:
        return canonical.encode(pages.sign_page(page, peer))

    (folder / cid / "0.json").write_bytes(b'{"node_public_key": "garbage", ')
    forged_bytes = sign(_entity_page(base, 1, forged)).replace(b"never seen", b"never said")
    (folder / cid / "1.json").write_bytes(forged_bytes)
    (folder / cid / "2.json").write_bytes(sign(_entity_page(base, 2, tampered)))
    (folder / cid / "3.json").write_bytes(sign(_entity_page(base, 3, genuine)))

    async with file_server(root) as where, b.syncer() as syncer:
        report = await syncer.sync(parse_remote(f"http://{where}"))
    assert report.ok, report.summary()
    assert report.broken == {"json": 1, "signature": 1}
    await b.wait_holding([genuine])
    after = await b.held()
    assert after[("post", victim.fingerprint)] == victim.last_update  # the tampered copy lost
    assert ("post", forged.fingerprint) not in after
    # fewer broken pages than abandon a cache: the cursor moves to the peer's page time
    assert report.cursors["posts"] == now
