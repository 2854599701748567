"""The CPU-bound part of validation: check a chunk of objects, say what each one is.

``judge`` takes ``(kind, raw)`` pairs and returns the ``mim.verify.verify`` verdict on each under
the node policy, with the time it took; an accepted verdict holds the object and its canonical
bytes, which are what the accepted stream carries. :func:`block_refs` says what the block list is
matched against. Everything here is pure; nothing touches the network or shared state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from mim.entities import Address, Entity, Key, Post, Thread, Truststate, Vote
from mim.signing import key_fingerprint
from mim.verify import Policy, Verdict, verify

__all__ = ["block_refs", "judge"]


def block_refs(entity: Entity) -> tuple[str, ...]:
    """Every name the block list may hold that refers to ``entity`` or an ancestor of it.

    The object's own fingerprint, its owner key's (``owner``, or for a Key its own fingerprint and
    the SHA-256 of its public key, the form ``owner`` takes), and its board, thread, parent,
    target and trust domain. An address is named by its location (host or IP, lower case).
    Deeper ancestors (the parent of a parent) are not followed: blocking a thread covers its
    posts through their ``thread`` field.
    """
    if isinstance(entity, Address):
        return (entity.location.lower(),) if entity.location else ()
    names: list[str] = [entity.fingerprint]
    if isinstance(entity, Key):
        if entity.key:
            names.append(key_fingerprint(entity.key.lower()))
    else:
        names.append(entity.owner)
    if isinstance(entity, Thread | Post | Vote):
        names += (
            (entity.board, entity.thread) if not isinstance(entity, Thread) else (entity.board,)
        )
    if isinstance(entity, Post):
        names.append(entity.parent)
    if isinstance(entity, Vote | Truststate):
        names.append(entity.target)
    if isinstance(entity, Truststate):
        names.append(entity.domain)
    return tuple(dict.fromkeys(n.lower() for n in names if n))


def judge(items: Iterable[tuple[str, bytes]], policy: Policy) -> list[tuple[Verdict, float]]:
    """The verdict on each ``(kind, raw)`` under ``policy`` and the seconds it took to reach.

    Never raises for bad input. An accepted verdict carries the object and its canonical bytes.
    """
    clock = time.perf_counter
    judged = []
    for kind, raw in items:
        started = clock()
        verdict = verify(kind, raw, policy)
        judged.append((verdict, clock() - started))
    return judged
