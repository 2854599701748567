"""A client that knows only the Mim API: it crawls a node's GET side and verifies everything."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from mim import canonical, pages, signing, verify
from mim import pow as mim_pow
from mim.entities import PLURALS, ApiResponse, Board
from mim.inputs import Inputs

ENDPOINTS = [
    f"v0/c0/{PLURALS[k]}" for k in ("board", "thread", "post", "vote", "key", "truststate")
]
POLICY = verify.Policy.uniform(2)


@dataclass
class Crawl:
    node_id: str = ""
    pages: int = 0
    objects: dict[str, set[str]] = field(default_factory=dict)
    addresses: list[str] = field(default_factory=list)


def _page(response: httpx.Response) -> ApiResponse:
    assert response.status_code == 200, (response.request.url, response.status_code)
    page = canonical.loads(ApiResponse, response.content)
    pages.verify_page(page)
    return page


def _as_go_sees_it(board: Board) -> None:
    """A Go verifier re-marshals what it decodes: a board's proofs must hold over its owners
    exactly as served, with no second spelling to fall back on (§4.5)."""
    inputs = Inputs(board)
    if board.update_signature:
        texts = (inputs.update_signature(), inputs.update_proof_of_work())
        proofs = (board.update_signature, board.update_proof_of_work)
    else:
        texts, proofs = (
            (inputs.signature(), inputs.proof_of_work()),
            (board.signature, board.proof_of_work),
        )
    assert signing.verify(texts[0], proofs[0], board.owner_publickey), board.fingerprint
    mim_pow.check(texts[1], proofs[1], board.owner_publickey, 1)


def _take(page: ApiResponse, crawl: Crawl) -> None:
    for kind, plural in PLURALS.items():
        for obj in getattr(page.response, plural) or ():
            if kind == "address":
                crawl.addresses.append(canonical.dumps(obj))
                continue
            verdict = verify.verify(kind, canonical.encode(obj), POLICY)
            assert verdict.ok, verdict.reason
            if isinstance(obj, Board):
                _as_go_sees_it(obj)
            crawl.objects.setdefault(kind, set()).add(obj.fingerprint)


async def crawl(client: httpx.AsyncClient) -> Crawl:
    """Read /v0/node, every index.json and every page they lead to; verify all of it."""
    result = Crawl()
    node = _page(await client.get("/v0/node"))
    result.node_id = pages.node_id(node.node_public_key)
    for endpoint in [*ENDPOINTS, "v0/addresses"]:
        index = _page(await client.get(f"/{endpoint}/index.json"))
        assert index.node_public_key == node.node_public_key
        assert index.caching.pregenerated
        for cache in index.results or ():
            folders = [""] if endpoint == "v0/addresses" else ["", "index/", "manifest/"]
            for folder in folders:
                n = 0
                while True:
                    page = _page(
                        await client.get(f"/{endpoint}/{cache.response_url}/{folder}{n}.json")
                    )
                    result.pages += 1
                    if folder == "":
                        _take(page, result)
                    if page.pagination.current_page >= page.pagination.pages:
                        break
                    n += 1
                beyond = await client.get(f"/{endpoint}/{cache.response_url}/{folder}{n + 1}.json")
                assert beyond.status_code in (204, 404)  # a stock web server says 404
    return result
