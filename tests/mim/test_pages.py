"""Pages: signatures, request checks, filters, slicing and the cache layout of §11."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest

from mim import canonical, entities, pages
from mim import pow as mim_pow
from mim.create import create
from mim.entities import Address, ApiResponse, Client, Filter, Protocol
from mim.errors import BadSignature
from mim.signing import SigningKey
from tests.helpers.forgery import FORGED_SIGNATURE, IDENTITY_KEY, verify_with_openssl

NODE = SigningKey.generate(bytes(range(32)))
OTHER = SigningKey.generate(bytes(range(1, 33)))
MINT = mim_pow.local_minter(random.Random(3).randrange)
NOW = 1_700_000_000
HEAD = 14 * 86400


def _base(nonce: str = "ab" * 32, now: int = NOW) -> ApiResponse:
    return pages.prefill(
        NODE.public_hex, port=8080, node_type=pages.NODE_TYPE_LIVE, nonce=nonce, now=now
    )


def _request(**changes: object) -> ApiResponse:
    page = dataclasses.replace(_base(), entity="boards", endpoint="boards", **changes)  # type: ignore[arg-type]
    return pages.build_request(page, NODE, MINT)


def _never_seen(key: str, nonce: str) -> bool:
    return False


def test_signed_page_verifies_and_names_the_node() -> None:
    """A page we sign verifies after a round trip through its bytes and yields our node ID."""
    page = pages.sign_page(pages.node_page(_base()), NODE)
    back = canonical.loads(ApiResponse, canonical.encode(page))
    assert pages.verify_page(back) == pages.node_id(NODE.public_hex)
    assert b'"proof_of_work":""' in canonical.encode(page)


def test_tampered_page_fails_verification() -> None:
    """Changing any signed field, or the key, makes the page signature fail."""
    page = pages.sign_page(pages.node_page(_base()), NODE)
    with pytest.raises(BadSignature):
        pages.verify_page(dataclasses.replace(page, timestamp=NOW + 1))
    with pytest.raises(BadSignature):
        pages.verify_page(dataclasses.replace(page, node_public_key=OTHER.public_hex))
    with pytest.raises(BadSignature):
        pages.verify_page(dataclasses.replace(page, page_signature=""))


def test_request_signature_covers_the_page_before_its_pow() -> None:
    """A built request carries PoW and still verifies: the signature covers proof_of_work ""."""
    request = _request()
    assert request.proof_of_work.startswith("MIM1:15:")
    assert pages.verify_page(request) == pages.node_id(NODE.public_hex)
    pages.check_request(request, now=NOW, nonce_seen=_never_seen)


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"timestamp": NOW - 21 * 60}, "request.timestamp"),
        ({"timestamp": NOW + 20 * 60}, "request.timestamp"),
        ({"nonce": ""}, "request.nonce"),
        ({"entity_version": 2}, "request.entity_version"),
    ],
)
def test_request_envelope_rules(change: dict[str, int | str], rule: str) -> None:
    """Stale timestamps, missing nonces and other versions are refused naming the rule."""
    with pytest.raises(pages.RequestRefused) as caught:
        pages.check_request(_request(**change), now=NOW, nonce_seen=_never_seen)
    assert caught.value.rule == rule
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        (Address(port=0, type=2, client=pages.CLIENT, protocol=pages.PROTOCOL), "request.port"),
        (
            Address(port=1, type=0, client=pages.CLIENT, protocol=pages.PROTOCOL),
            "request.node_type",
        ),
        (
            Address(port=1, type=2, client=Client(name="Other"), protocol=pages.PROTOCOL),
            "request.client",
        ),
        (Address(port=1, type=2, client=pages.CLIENT, protocol=Protocol()), "request.subprotocol"),
    ],
)
def test_request_address_rules(address: Address, rule: str) -> None:
    """Port 0, node type 0, a client other than Aether or no c0 subprotocol are refused."""
    with pytest.raises(pages.RequestRefused) as caught:
        pages.check_request(_request(address=address), now=NOW, nonce_seen=_never_seen)
    assert caught.value.rule == rule


def test_weak_or_foreign_pow_is_refused() -> None:
    """A request PoW under 15, unsigned, or signed by another key is refused."""
    page = dataclasses.replace(_base(), entity="boards", endpoint="boards")
    weak = pages.build_request(page, NODE, MINT, difficulty=8)
    with pytest.raises(pages.RequestRefused, match="minimum"):
        pages.check_request(weak, now=NOW, nonce_seen=_never_seen)
    good = pages.build_request(page, NODE, MINT)
    unsigned = dataclasses.replace(good, proof_of_work=good.proof_of_work.rsplit(":", 1)[0] + ":")
    with pytest.raises(pages.RequestRefused) as caught:
        pages.check_request(unsigned, now=NOW, nonce_seen=_never_seen)
    assert caught.value.rule == "pow.unsigned"
    foreign = dataclasses.replace(good, node_public_key=OTHER.public_hex)
    with pytest.raises(pages.RequestRefused):
        pages.check_request(foreign, now=NOW, nonce_seen=_never_seen)


def test_nonce_is_spent_once_and_only_by_valid_requests() -> None:
    """The nonce callback is asked last; a second use of a nonce is refused."""
    seen: set[tuple[str, str]] = set()

    def nonce_seen(key: str, nonce: str) -> bool:
        was = (key, nonce) in seen
        seen.add((key, nonce))
        return was

    with pytest.raises(pages.RequestRefused):
        pages.check_request(_request(timestamp=1), now=NOW, nonce_seen=nonce_seen)
    assert not seen
    request = _request()
    pages.check_request(request, now=NOW, nonce_seen=nonce_seen)
    with pytest.raises(pages.RequestRefused) as caught:
        pages.check_request(request, now=NOW, nonce_seen=nonce_seen)
    assert caught.value.rule == "request.nonce_reused"


def test_filters_parse_into_a_query() -> None:
    """Timestamp zeros mean the head's start and now; embeds and fingerprints are collected."""
    query = pages.parse_filters(
        [Filter(type="timestamp", values=("0", "0")), Filter(type="embed", values=("threads",))],
        now=NOW,
        head_seconds=HEAD,
    )
    assert (query.start, query.end, query.embeds) == (NOW - HEAD, NOW, ("threads",))
    query = pages.parse_filters(
        [Filter(type="fingerprint", values=("a" * 64,))], now=NOW, head_seconds=HEAD
    )
    assert query.fingerprints == ("a" * 64,)


@pytest.mark.parametrize(
    ("filters", "rule"),
    [
        ([Filter(type="timestamp", values=("5",))], "filter.timestamp_values"),
        ([Filter(type="timestamp", values=("x", "0"))], "filter.timestamp"),
        ([Filter(type="embed", values=("boards",))], "filter.embed"),
        ([Filter(type="colour", values=("red",))], "filter.type"),
        (
            [
                Filter(type="timestamp", values=("5", "9")),
                Filter(type="fingerprint", values=("a",)),
            ],
            "filter.exclusive",
        ),
        ([Filter(type="timestamp", values=("--1", "0"))], "filter.timestamp"),
        ([Filter(type="timestamp", values=("-1", "0"))], "filter.timestamp"),
        ([Filter(type="timestamp", values=("9" * 5000, "0"))], "filter.timestamp"),
        ([Filter(type="timestamp", values=("0", str(2**63)))], "filter.timestamp"),
        ([Filter(type="timestamp", values=("١٢", "0"))], "filter.timestamp"),
        ([Filter(type="fingerprint", values=("a\x00b",))], "filter.fingerprint"),
        ([Filter(type="fingerprint", values=("",))], "filter.fingerprint"),
        ([Filter(type="fingerprint", values=("a" * 65,))], "filter.fingerprint"),
        ([Filter(type="fingerprint", values=tuple(str(n) for n in range(65)))], "filter.values"),
        ([Filter(type="embed", values=("threads",) * 20000)], "filter.values"),
        ([Filter(type="embed", values=("posts",))] * 4, "filter.count"),
    ],
)
def test_bad_filters_are_refused(filters: list[Filter], rule: str) -> None:
    """A one-value timestamp filter and other malformed filters are refused naming the filter and
    the rule, never crash: hostile numbers, NUL bytes, over-long values, too many values or
    filters (§9.3, §20.7)."""
    with pytest.raises(pages.RequestRefused) as caught:
        pages.parse_filters(filters, now=NOW, head_seconds=HEAD)
    assert caught.value.rule == rule


def test_embeds_and_fingerprints_are_kept_once() -> None:
    """The same embed or fingerprint asked many times is one in the query; 64 values fit."""
    query = pages.parse_filters(
        [Filter(type="embed", values=("threads", "keys") * 32)], now=NOW, head_seconds=HEAD
    )
    assert query.embeds == ("threads", "keys")
    query = pages.parse_filters(
        [Filter(type="fingerprint", values=("b" * 64, "a" * 64) * 32)], now=NOW, head_seconds=HEAD
    )
    assert query.fingerprints == ("b" * 64, "a" * 64)


def test_a_sender_describing_itself_out_of_bounds_is_refused() -> None:
    """A request whose address lists more than 32 subprotocols, or a subprotocol name of 3 MB, is
    refused before anything of it is stored (§9.2 protocolBC)."""
    c0 = pages.PROTOCOL.subprotocols[0] if pages.PROTOCOL.subprotocols else None
    assert c0 is not None
    many = dataclasses.replace(pages.PROTOCOL, subprotocols=(c0,) * 33)
    huge = dataclasses.replace(
        pages.PROTOCOL, subprotocols=(c0, dataclasses.replace(c0, name="x" * (3 << 20)))
    )
    for protocol, rule in ((many, "PROTOCOL_SUBPROTOCOLS_MAX"), (huge, "PROTOCOL_NAME_MAX")):
        address = Address(port=1, type=2, client=pages.CLIENT, protocol=protocol, entity_version=1)
        with pytest.raises(pages.RequestRefused) as caught:
            pages.check_request(_request(address=address), now=NOW, nonce_seen=_never_seen)
        assert caught.value.rule == rule


def test_split_uses_ceiling_pages() -> None:
    """An exact multiple makes no extra empty page; an empty list makes one empty page."""
    assert [len(p) for p in pages.split(list(range(800)), 400)] == [400, 400]
    assert [len(p) for p in pages.split(list(range(801)), 400)] == [400, 400, 1]
    assert pages.split([], 400) == [[]]


def test_head_slices_cover_the_head_in_aligned_blocks() -> None:
    """Slices tile [now − head, now] without gaps, on 6-hour boundaries, none shorter than 3 h
    at the end."""
    for now in (NOW, NOW + 3600, NOW + 5 * 3600 + 59):
        slices = pages.head_slices(now, HEAD)
        assert slices[0][0] == now - HEAD
        assert slices[-1][1] == now
        assert all(a[1] == b[0] for a, b in itertools.pairwise(slices))
        assert all(end % pages.CACHE_SLICE_SECONDS == 0 for _, end in slices[:-1])
        assert slices[-1][1] - slices[-1][0] >= 3 * 3600


def test_cache_pages_layout_and_pagination() -> None:
    """A cache of 401 posts has two entity pages, one index and one manifest page, with
    pagination.pages the last index and index entries pointing at the right entity page."""
    posts = [
        create("post", {"board": "b" * 64, "thread": "c" * 64, "body": f"p{i}"}, NODE, 0, NOW, MINT)
        for i in range(401)
    ]
    base = dataclasses.replace(_base(), filters=pages.timestamp_filter(NOW - 10, NOW))
    built = pages.cache_pages("post", posts, base)
    assert sorted(built) == ["0.json", "1.json", "index/0.json", "manifest/0.json"]
    assert built["0.json"].pagination == entities.Pagination(pages=1, current_page=0)
    assert built["1.json"].response.posts == (posts[400],)
    assert built["1.json"].endpoint == "posts"
    index = built["index/0.json"].response.posts_index or ()
    assert index[400].page_number == 1
    assert index[400].fingerprint == posts[400].fingerprint
    manifests = built["manifest/0.json"].response.posts_manifest or ()
    assert [m.page_number for m in manifests] == [0, 1]
    assert built["manifest/0.json"].endpoint == "manifest"
    assert pages.cache_pages("post", posts, base, post=True)["index/0.json"].endpoint == (
        "posts_index_post"
    )


def test_addresses_are_sanitised_on_the_way_out() -> None:
    """Served addresses keep only location, sublocation, port, version and realm."""
    full = Address(
        location="192.0.2.1",
        location_type=4,
        port=9000,
        type=2,
        protocol=pages.PROTOCOL,
        client=pages.CLIENT,
        entity_version=1,
    )
    built = pages.cache_pages("address", [full], _base())
    assert sorted(built) == ["0.json"]
    (served,) = built["0.json"].response.addresses or ()
    assert canonical.dumps(served) == (
        '{"location":"192.0.2.1","sublocation":"","location_type":0,"port":9000,"type":0,'
        '"protocol":{"version_major":0,"version_minor":0,"subprotocols":[]},'
        '"client":{"version_major":0,"version_minor":0,"version_patch":0,"name":""},'
        '"entity_version":1,"realm_id":""}'
    )


def test_cache_id_depends_on_content() -> None:
    """The same slice with the same content keeps its ID; new content gets a new one."""
    first = pages.cache_id("posts", 1, 2, [("a", 0)])
    assert first == pages.cache_id("posts", 1, 2, [("a", 0)])
    assert first != pages.cache_id("posts", 1, 2, [("a", 5)])
    assert len(first) == 64


def test_pages_and_requests_from_a_key_of_small_order_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page "signed" by the identity key, whose forged signature OpenSSL accepts for any page,
    fails verification, and a request whose proof it "signed" is refused, both naming the key's
    rule (§20.12)."""
    verify_with_openssl(monkeypatch)
    page = dataclasses.replace(
        pages.node_page(_base()), node_public_key=IDENTITY_KEY, page_signature=FORGED_SIGNATURE
    )
    with pytest.raises(BadSignature) as caught:
        pages.verify_page(page)
    assert (caught.value.field, caught.value.rule) == ("node_public_key", "public_key.small_order")

    request = dataclasses.replace(_base(), entity="boards", endpoint="boards")
    request = dataclasses.replace(request, node_public_key=IDENTITY_KEY, page_signature="")
    work = MINT(canonical.dumps(request), pages.REQUEST_MIN_POW) + FORGED_SIGNATURE
    with pytest.raises(pages.RequestRefused) as refused:
        pages.check_request(
            dataclasses.replace(request, proof_of_work=work), now=NOW, nonce_seen=_never_seen
        )
    assert refused.value.rule == "public_key.small_order"
