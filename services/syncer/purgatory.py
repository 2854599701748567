"""Purgatory: what a sync brings from beyond our event horizon waits for a newer descendant (§13.5).

Our event horizon is retention's cutoff (the store's), ``now - max(MIM_NETWORK_MEMORY_DAYS,
MIM_NETWORK_HEAD_DAYS)`` (§15, §20.6): retention forgets what was last referenced before it, and
without purgatory the next sync would pull it straight back. During one sync, every object whose
last-modified time (the later of ``creation`` and ``last_update``) is before the horizon is held;
every newer object passes at once and marks the objects it descends from as wanted. Descent is
§13.5's: a board's threads (by ``board``), a thread's posts (by ``thread``), a post's replies (by
``parent``), and everything a key owns (boards, threads, posts, votes, truststates, by ``owner``).

At the end of the sync a held object is admitted when some descendant of it received in this sync
is newer than the horizon, at most :data:`MAX_DEPTH` steps down; the others are dropped. Votes and
truststates have no descendants, so old ones are always dropped. Addresses never enter.

The reference looks one step down only (its descendant lists hold newer objects alone), so an old
board whose only newer descendant is a post in an old thread is lost there; here the search goes
through held objects too. Memory is bounded: only objects from beyond the horizon are held (at
most ``max_held`` of them; more are dropped at once and counted), plus a 64-bit hash of each
``(kind, fingerprint)`` that newer objects name as their ancestor (about 80 bytes each, a third of
the pair itself; a collision could only admit an old object nothing asked for).

Pure: no I/O, no clock; the horizon is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from mim.entities import Key, Post, Provable, Thread

__all__ = ["MAX_DEPTH", "Purgatory", "Settled", "ancestors", "last_modified"]

#: Deepest descent followed from a held object to a newer one (§13.5, the reference's bound).
MAX_DEPTH: Final = 1000

Ref = tuple[str, str]  # (kind, fingerprint)


def last_modified(obj: Provable) -> int:
    """The later of ``creation`` and ``last_update``."""
    return max(obj.creation, obj.last_update)


def ancestors(obj: Provable) -> Iterator[Ref]:
    """The objects ``obj`` directly descends from, as ``(kind, fingerprint)`` (§13.5)."""
    if isinstance(obj, Thread) and obj.board:
        yield ("board", obj.board)
    if isinstance(obj, Post):
        if obj.thread:
            yield ("thread", obj.thread)
        if obj.parent:
            yield ("post", obj.parent)
    if not isinstance(obj, Key) and obj.owner:
        yield ("key", obj.owner)


@dataclass(frozen=True, slots=True)
class Settled:
    """The end of one sync's purgatory: what to publish, and how many of each kind went where."""

    admitted: list[Provable]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # outcome -> kind -> n

    def total(self, outcome: str) -> int:
        """Objects of every kind with ``outcome`` (``held`` is ``admitted`` plus ``dropped``)."""
        if outcome == "held":
            return self.total("admitted") + self.total("dropped")
        return sum(self.counts.get(outcome, {}).values())


class Purgatory:
    """The held objects of one sync, and the ancestors its newer objects named."""

    def __init__(self, horizon: int, *, max_held: int = 10_000, max_depth: int = MAX_DEPTH) -> None:
        self.horizon = horizon
        self._max_held = max_held
        self._max_depth = max_depth
        self._held: dict[Ref, Provable] = {}
        self._wanted: set[int] = set()  # hash() of the refs newer objects descend from
        self._overflow: dict[str, int] = {}
        self.holds = 0  # objects ever held or turned away for room, in this sync

    def sort(self, objects: Iterable[Provable]) -> list[Provable]:
        """Hold what is older than the horizon; return the rest, to be published now."""
        passing: list[Provable] = []
        for obj in objects:
            ref = (obj.kind, obj.fingerprint)
            if last_modified(obj) >= self.horizon:
                passing.append(obj)
                self._wanted.update(hash(ref) for ref in ancestors(obj))
                self._held.pop(ref, None)  # a newer version passed: the held one is moot
                continue
            self.holds += 1
            kept = self._held.get(ref)
            if kept is not None:
                if obj.last_update > kept.last_update:
                    self._held[ref] = obj
            elif len(self._held) < self._max_held:
                self._held[ref] = obj
            else:
                self._overflow[obj.kind] = self._overflow.get(obj.kind, 0) + 1
        return passing

    def __len__(self) -> int:
        return len(self._held)

    def settle(self) -> Settled:
        """Admit the held objects with a newer descendant within ``max_depth``; drop the rest."""
        admitted: set[Ref] = set()
        frontier = [ref for ref in self._held if hash(ref) in self._wanted]
        depth = 1
        while frontier and depth <= self._max_depth:
            upward: list[Ref] = []
            for ref in frontier:
                if ref in admitted:
                    continue
                admitted.add(ref)
                upward.extend(a for a in ancestors(self._held[ref]) if a in self._held)
            frontier = [ref for ref in upward if ref not in admitted]
            depth += 1
        counts: dict[str, dict[str, int]] = {"admitted": {}, "dropped": dict(self._overflow)}
        out: list[Provable] = []
        for ref, obj in self._held.items():
            outcome = "admitted" if ref in admitted else "dropped"
            counts[outcome][obj.kind] = counts[outcome].get(obj.kind, 0) + 1
            if ref in admitted:
                out.append(obj)
        self._held.clear()
        self._wanted.clear()
        return Settled(out, counts)
