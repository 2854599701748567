"""Which earlier containers a POST answer names again (PROTOCOL.md §11.7 step 1)."""

from __future__ import annotations

from services.gateway.chains import REUSE_SECONDS, Link, chain, late, merged_counts

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


def test_a_link_may_begin_the_second_after_the_one_before_it_ends() -> None:
    links = [link("a", 100, 200), link("b", 201, 300)]
    assert [x.folder for x in chain(links, 100, 1000, NOW)] == ["a", "b"]
    assert [x.folder for x in chain(links[1:], 200, 1000, NOW)] == []  # not as the first


def test_a_range_no_link_starts_at_or_before_has_no_chain() -> None:
    assert chain([link("a", 101, 200)], 100, 1000, NOW) == []
    assert chain([link("a", 50, 99)], 100, 1000, NOW) == []  # ends before the range starts
    assert [x.folder for x in chain([link("a", 50, 100)], 100, 1000, NOW)] == ["a"]  # holds it


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


def test_late_objects_are_read_from_the_floor_of_a_later_link_that_took_them_in() -> None:
    first = Link("a", 0, 200, NOW - 120, 500, 100)
    took = Link("b", 200, 260, NOW - 60, 500, 150, (("a", 100, 80),))
    assert [(x.link.folder, x.start, x.floor) for x in late([first, took], 100, 120)] == [
        ("a", 100, 150),
        ("b", 140, 150),
    ]


def test_late_objects_keep_the_links_own_floor_unless_a_later_link_took_in_all_of_them() -> None:
    first = Link("a", 0, 200, NOW - 120, 500, 100)
    raised = Link("b", 200, 260, NOW - 60, 500, 150, (("a", 120, 80),))  # from a higher floor
    shorter = Link("b", 200, 260, NOW - 60, 500, 150, (("a", 100, 150),))  # from a later stamp
    for later in (raised, shorter):
        assert late([first, later], 100, 120)[0].floor == 100
    assert late([raised, first], 100, 120)[1].floor == 100  # only a later link counts
