"""Which earlier containers a POST answer names again (PROTOCOL.md §11.7 step 1)."""

from __future__ import annotations

from services.gateway.chains import REUSE_SECONDS, Link, chain, merged_counts

from mim.entities import EntityCount

NOW = 1_800_000_000


def link(name: str, start: int, end: int, made: int = NOW - 60) -> Link:
    return Link(name, start, end, made, 500, 0)


def test_the_chain_reaches_as_far_as_it_can_with_the_fewest_links() -> None:
    links = [
        link("a", 100, 200),
        link("b", 150, 260),  # reaches further than a from 150
        link("c", 190, 240),  # reaches less far than b
        link("d", 260, 320),  # starts where b ends
        link("e", 330, 400),  # beyond a gap
    ]
    assert [x.folder for x in chain(links, 150, 1000, NOW)] == ["b", "d"]


def test_a_range_no_link_starts_at_or_before_has_no_chain() -> None:
    assert chain([link("a", 101, 200)], 100, 1000, NOW) == []
    assert chain([link("a", 50, 100)], 100, 1000, NOW) == []  # ends where the range starts


def test_the_chain_stops_once_it_passes_the_end() -> None:
    links = [link("a", 100, 200), link("b", 200, 300)]
    assert [x.folder for x in chain(links, 120, 150, NOW)] == ["a"]


def test_only_recent_containers_are_named() -> None:
    old = link("old", 100, 500, made=NOW - REUSE_SECONDS)
    fresh = link("fresh", 100, 200, made=NOW - REUSE_SECONDS + 1)
    assert [x.folder for x in chain([old, fresh], 100, 1000, NOW)] == ["fresh"]


def test_counts_of_the_chain_are_added_to_the_answers() -> None:
    own = (EntityCount(protocol="c0", name="post", count=3),)
    assert merged_counts(own, "post", "c0", 7) == (
        EntityCount(protocol="c0", name="post", count=10),
    )
    assert merged_counts((), "post", "c0", 7) == (EntityCount(protocol="c0", name="post", count=7),)
    assert merged_counts(own, "post", "c0", 0) == own
