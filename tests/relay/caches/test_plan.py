"""What a generation covers, merges and retires: bounds that never move, an index that stays
small."""

from __future__ import annotations

from relay.caches.plan import BLOCK_SECONDS, Merge, plan, windows
from relay.db.caches import Generation, Slice

HEAD = 14 * 86400
B = BLOCK_SECONDS
NOW = 10_000 * B + 1234  # a little into a block


def _slice(start: int, end: int, cache: str, endpoint: str = "v0/c0/posts") -> Slice:
    return Slice(endpoint, cache, start, end, 1, 1, 1, 1, 100)


def test_windows_are_cut_at_block_edges() -> None:
    """A span is cut at each multiple of the block; an empty span has no window."""
    assert windows(B - 10, 2 * B + 5) == [(B - 10, B), (B, 2 * B), (2 * B, 2 * B + 5)]
    assert windows(B + 1, B + 2) == [(B + 1, B + 2)]
    assert windows(5, 5) == []


def test_the_first_generation_covers_the_head_up_to_the_settle() -> None:
    """With no generation before, the windows run from the head's start to `settle` before now,
    in blocks."""
    first = plan(None, [], now=NOW, head_seconds=HEAD, settle=120, merge_after=86400)
    assert first.covered_to == NOW - 120
    assert first.windows[0][0] == NOW - HEAD
    assert first.windows[-1][1] == NOW - 120
    assert all(b - a <= B for a, b in first.windows)
    assert [a for a, _ in first.windows[1:]] == [b for _, b in first.windows[:-1]]


def test_a_generation_covers_only_what_is_new() -> None:
    """The next generation starts where the last one ended, so the caches before keep their
    bounds; with the clock not past the settle, there is nothing to cover."""
    last = Generation(7, NOW - 400, NOW - 300)
    listed = [_slice(NOW - 700, NOW - 400, "cache_a")]
    later = plan(last, listed, now=NOW, head_seconds=HEAD, settle=120, merge_after=86400)
    assert later.windows == ((NOW - 400, NOW - 120),)
    assert later.merges == () and later.retired == ()
    idle = plan(last, listed, now=NOW - 290, head_seconds=HEAD, settle=120, merge_after=86400)
    assert idle.idle and idle.covered_to == NOW - 400


def test_a_block_is_merged_once_it_ended_long_enough_ago() -> None:
    """A block's caches become one after `merge_after`, from the first one's start to the last
    one's end; a block with one cache, or one that ended too recently, is left alone."""
    old = (NOW // B - 8) * B  # a block that ended two days ago
    recent = (NOW // B - 1) * B  # the block before the current one
    listed = [
        _slice(old + 10, old + 300, "cache_1"),
        _slice(old + 300, old + B, "cache_2"),
        _slice(old + B, old + 2 * B, "cache_3"),
        _slice(recent, recent + 300, "cache_4"),
        _slice(recent + 300, recent + B, "cache_5"),
        _slice(old + 50, old + 60, "cache_6", endpoint="v0/addresses"),
    ]
    last = Generation(3, NOW - 120, NOW)
    todo = plan(last, listed, now=NOW, head_seconds=HEAD, settle=120, merge_after=86400)
    assert todo.merges == (Merge("v0/c0/posts", old + 10, old + B, ("cache_1", "cache_2")),)


def test_caches_ending_before_the_head_are_retired() -> None:
    """A cache that ended before the head's start is no longer listed; one reaching into the head
    stays."""
    start = NOW - HEAD
    listed = [_slice(start - 500, start, "cache_out"), _slice(start - 500, start + 1, "cache_in")]
    last = Generation(3, NOW - 120, NOW)
    todo = plan(last, listed, now=NOW, head_seconds=HEAD, settle=120, merge_after=86400)
    assert todo.retired == (("v0/c0/posts", "cache_out"),)
