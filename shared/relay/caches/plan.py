"""What one cache generation builds, merges and retires (PROTOCOL.md §11.6). Pure.

Time is cut into blocks of ``pages.CACHE_SLICE_SECONDS`` (six hours) aligned on multiples of it.
A generation at ``now`` covers what the last one did not, up to ``now - settle``: objects
stamped before that have committed (``settle`` is the longest a commit may lag its stamp), so a
cache, once built, never needs to change. The time to cover is cut at block edges into
*windows*; each window of each endpoint that holds something becomes one cache. The first
generation starts at the head's start.

Bounds never move: the caches a remote took before stay listed, under the same IDs, until they
fall out of the head. So that the index does not grow by one cache per generation forever, the
caches of a block are *merged* into one once the block ended ``merge_after`` ago: remotes that
sync more often than that have passed the block already (they read caches ending after their
cursor only) and never read the merged cache. A cache is *retired* (no longer listed; its files
kept a while for remotes that read the index before) when merged, or when it ends before the
head's start.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from mim import pages
from relay.db.caches import Generation, Slice

__all__ = ["BLOCK_SECONDS", "Merge", "Plan", "plan", "windows"]

BLOCK_SECONDS = pages.CACHE_SLICE_SECONDS


@dataclass(frozen=True, slots=True)
class Merge:
    """Caches of one endpoint and block to replace by one cache over ``[start, end)``."""

    endpoint: str
    start: int
    end: int
    caches: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    """What a generation does: cover up to ``covered_to`` with ``windows``, merge, retire."""

    covered_to: int
    windows: tuple[tuple[int, int], ...] = ()
    merges: tuple[Merge, ...] = ()
    retired: tuple[tuple[str, str], ...] = field(default=())  # (endpoint, cache) out of the head

    @property
    def idle(self) -> bool:
        """Nothing to cover, merge or retire."""
        return not (self.windows or self.merges or self.retired)


def windows(start: int, end: int, block: int = BLOCK_SECONDS) -> list[tuple[int, int]]:
    """``[start, end)`` cut at the multiples of ``block``."""
    if end <= start:
        return []
    edges = range((start // block + 1) * block, end, block)
    bounds = [start, *edges, end]
    return list(itertools.pairwise(bounds))


def _merges(listed: Sequence[Slice], before: int, block: int) -> list[Merge]:
    """Blocks ending by ``before`` that hold more than one cache of an endpoint."""
    groups: dict[tuple[str, int], list[Slice]] = {}
    for s in listed:
        groups.setdefault((s.endpoint, s.starts_from // block), []).append(s)
    merges: list[Merge] = []
    for (endpoint, number), group in sorted(groups.items()):
        if len(group) < 2 or (number + 1) * block > before:
            continue
        caches = tuple(sorted(s.cache for s in group))
        start = min(s.starts_from for s in group)
        end = max(s.ends_at for s in group)
        merges.append(Merge(endpoint, start, end, caches))
    return merges


def plan(
    last: Generation | None,
    listed: Sequence[Slice],
    *,
    now: int,
    head_seconds: int,
    settle: int,
    merge_after: int,
    block: int = BLOCK_SECONDS,
) -> Plan:
    """The next generation after ``last`` (None: the first), whose caches are ``listed``."""
    head_start = now - head_seconds
    covered_from = head_start if last is None else max(last.covered_to, head_start)
    covered_to = max(now - settle, covered_from)
    alive = [s for s in listed if s.ends_at > head_start]
    gone = tuple(sorted((s.endpoint, s.cache) for s in listed if s.ends_at <= head_start))
    merges = _merges(alive, covered_to - merge_after, block)
    return Plan(
        covered_to=covered_to,
        windows=tuple(windows(covered_from, covered_to, block)),
        merges=tuple(merges),
        retired=gone,
    )
