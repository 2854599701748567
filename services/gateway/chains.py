"""Reuse of earlier POST answer containers (PROTOCOL.md §11.7 step 1).

A peer syncing every minute asks for the same recent stretch of time again and again. Without
reuse every answer would be a new container holding that stretch again, and the containers would
keep each object several times over. So a container written for a plain time range (one kind, no
fingerprints, no embeds) is remembered as a :class:`Link`, and a later plain time range of the
same kind names earlier containers that cover as much of it as they can (the *chain*) and reads
the database only from where the chain ends.

A link says what its container holds: every object of its kind stamped in ``[start, end]`` and
committed when it was read. An object stamped before ``end`` may commit after that read (a store
batch in flight); so for each link the answer also reads what was stamped in the last
``live_tail_overlap_seconds`` before ``end`` by transactions that were not finished when the link
was read (its ``floor``, :func:`relay.db.objects.committed_since`); once a later container has
taken those in, answers naming both read them from that container's floor (:func:`late`), so each
is read again about once. Nothing the store commits is missed; an object named twice costs the
peer nothing, as its manifest tells it what it has.

Links are shared by every replica in one key per kind of the containers' registry bucket,
rewritten by compare-and-swap. A link is offered for :data:`REUSE_SECONDS` after its container
was written, so a peer told of it has a quarter of an hour to read it before it expires.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass
from typing import Any, Final

from mim.entities import EntityCount, Kind
from relay.kv import Bucket
from relay.logging import get_logger
from services.gateway.containers import LIFE_SECONDS

__all__ = [
    "MAX_LINKS",
    "REUSE_SECONDS",
    "Late",
    "Link",
    "chain",
    "late",
    "load",
    "merged_counts",
    "remember",
]

REUSE_SECONDS: Final = LIFE_SECONDS - 15 * 60
MAX_LINKS: Final = 256  # per kind, newest kept: a few hundred bytes each in one key
_SWAP_ATTEMPTS: Final = 8

_log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Link:
    """One container that may be named again: what it holds and when it was read."""

    folder: str  # post_<id>, as an answer's results name it
    start: int
    end: int
    made: int
    count: int  # objects in it
    floor: int  # the database's oldest running transaction just before the read
    # the links whose late objects its read took in: (folder, from this floor, from this stamp)
    absorbed: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Late:
    """What an answer reads again for one link of its chain: objects of ``kind`` stamped in
    ``[start, link.end]`` written by a transaction at or above ``floor``."""

    link: Link
    start: int
    floor: int


def _key(kind: Kind) -> str:
    return f"chain.{kind}"


def _link(row: Sequence[Any]) -> Link:
    folder, start, end, made, count, floor, *rest = row
    absorbed = rest[0] if rest else []
    if not isinstance(absorbed, list):
        raise TypeError("absorbed is not a list")
    numbers = (int(start), int(end), int(made), int(count), int(floor))
    return Link(str(folder), *numbers, tuple((str(a[0]), int(a[1]), int(a[2])) for a in absorbed))


def _decoded(value: bytes) -> list[Link]:
    try:
        return [_link(row) for row in json.loads(value)]
    except (ValueError, TypeError, IndexError):
        return []


def chain(links: Iterable[Link], start: int, end: int, now: int) -> list[Link]:
    """Links that cover ``[start, end]`` from ``start`` on as far as they reach, fewest first:
    at each step the one reaching furthest among those that hold the second the chain has got to
    (or, past the first link, begin the second after it). Only links written in the last
    :data:`REUSE_SECONDS` count."""
    usable = [link for link in links if link.made > now - REUSE_SECONDS]
    found: list[Link] = []
    at = start
    while at < end:
        # ranges are inclusive: the first link must hold the start second (it may end there),
        # each next one may begin the second after the one before it ends
        if found:
            reaching = [link for link in usable if link.start <= at + 1 and at < link.end]
        else:
            reaching = [link for link in usable if link.start <= at <= link.end]
        if not reaching:
            break
        best = max(reaching, key=lambda link: link.end)
        found.append(best)
        at = best.end
    return found


def late(links: Sequence[Link], start: int, overlap: int) -> list[Late]:
    """For each link of a chain, what may have committed after its read: stamped within
    ``overlap`` before its end (not before ``start``), by a transaction at or above its floor.

    A later link of the same chain that took in this link's late objects from this link's own
    floor, over at least this stretch, holds every one that committed before its own read; what
    is left is at or above that later link's floor, so the answer reads from there instead."""
    found: list[Late] = []
    for at, link in enumerate(links):
        since = max(start, link.end - overlap)
        floors = [later.floor for later in links[at + 1 :] if _took_in(later, link, since)]
        found.append(Late(link, since, max([link.floor, *floors])))
    return found


def _took_in(later: Link, link: Link, since: int) -> bool:
    """Whether ``later`` read ``link``'s late objects from ``link``'s own floor, from ``since``
    or earlier."""
    return any(
        folder == link.folder and used == link.floor and region <= since
        for folder, used, region in later.absorbed
    )


def merged_counts(
    counts: Sequence[EntityCount], kind: Kind, protocol: str, more: int
) -> tuple[EntityCount, ...]:
    """``counts`` with ``more`` objects of ``kind`` added (the chain's, §11.7 step 4)."""
    if not more:
        return tuple(counts)
    if not any(c.name == kind for c in counts):
        return (*counts, EntityCount(protocol=protocol, name=kind, count=more))
    return tuple(
        EntityCount(protocol=c.protocol, name=c.name, count=c.count + more) if c.name == kind else c
        for c in counts
    )


async def load(registry: Bucket, kind: Kind) -> list[Link]:
    """The links of ``kind`` every replica has remembered."""
    entry = await registry.get(_key(kind))
    return _decoded(entry.value) if entry else []


async def remember(registry: Bucket, kind: Kind, link: Link, now: int) -> bool:
    """Add ``link`` to ``kind``'s links, dropping those past reuse; False if other replicas kept
    winning the race to write them (the container is then simply not reused)."""
    for _ in range(_SWAP_ATTEMPTS):
        entry = await registry.get(_key(kind))
        links = _decoded(entry.value) if entry else []
        kept = [x for x in links if x.made > now - REUSE_SECONDS][-(MAX_LINKS - 1) :]
        value = json.dumps([astuple(x) for x in [*kept, link]], separators=(",", ":")).encode()
        if entry is None:
            written = await registry.claim(_key(kind), value)
        else:
            written = await registry.swap(_key(kind), value, entry.revision)
        if written is not None:
            return True
        await _pause()
    _log.warning("container_link_not_kept", kind=kind, folder=link.folder)
    return False


async def _pause() -> None:
    await asyncio.sleep(random.uniform(0.001, 0.01))  # spreads racing replicas
