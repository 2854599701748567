"""The CPU-bound part of validation: check a chunk of objects, say what each one is.

``judge`` takes ``(kind, raw)`` pairs and returns one :class:`Outcome` each. It runs
``mim.verify.verify`` with the node policy and, for an accepted object, adds the object and its
canonical bytes, which are what the accepted stream carries; :func:`block_refs` says what the
block list is matched against. Everything here is pure; nothing touches the network or shared state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import NamedTuple

from mim import canonical
from mim.entities import Address, Entity, Key, Post, Thread, Truststate, Vote
from mim.signing import key_fingerprint
from mim.verify import Policy, verify

__all__ = ["Outcome", "block_refs", "judge"]


class Outcome(NamedTuple):
    """One verdict, with what the validator needs to publish it."""

    ok: bool
    kind: str
    stage: str
    reason: str
    field: str
    rule: str
    fingerprint: str
    last_update: int
    entity: Entity | None  # the accepted object; what the block list matches is derived from it
    canonical: bytes
    seconds: float


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


def _one(kind: str, raw: bytes, policy: Policy) -> Outcome:
    started = time.perf_counter()
    verdict = verify(kind, raw, policy)
    if not verdict.ok or verdict.entity is None:
        return Outcome(
            False,
            kind,
            verdict.stage,
            verdict.reason,
            verdict.field,
            verdict.rule,
            verdict.fingerprint,
            verdict.last_update,
            None,
            b"",
            time.perf_counter() - started,
        )
    entity = verdict.entity
    return Outcome(
        True,
        kind,
        "",
        "",
        "",
        "",
        verdict.fingerprint,
        verdict.last_update,
        entity,
        canonical.encode(entity),
        time.perf_counter() - started,
    )


def judge(items: Iterable[tuple[str, bytes]], policy: Policy) -> list[Outcome]:
    """The outcome of each ``(kind, raw)`` under ``policy``; never raises for bad input."""
    return [_one(kind, raw, policy) for kind, raw in items]
