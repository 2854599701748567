"""The CPU-bound part of validation, run in worker processes: verify a batch, say what it refers to.

``judge`` takes ``(kind, raw)`` pairs and returns one :class:`Outcome` each. It runs
``mim.verify.verify`` with the node policy (sent as plain values, :func:`policy_spec`, and
rebuilt once per worker process) and, for an
accepted object, adds what the block list is matched against (:func:`block_refs`) and the
object's canonical bytes, which are what the accepted stream carries. Everything here is pure and
picklable; nothing touches the network.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Final, NamedTuple

from mim import canonical
from mim.entities import Address, Entity, Key, Post, Thread, Truststate, Vote
from mim.signing import key_fingerprint
from mim.verify import Policy, verify

__all__ = ["Outcome", "block_refs", "judge", "policy_spec", "warm"]


class Outcome(NamedTuple):
    """One verdict in a form that pickles small and fast."""

    ok: bool
    kind: str
    stage: str
    reason: str
    field: str
    rule: str
    fingerprint: str
    last_update: int
    refs: tuple[str, ...]
    canonical: bytes
    seconds: float


PolicySpec = tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...], bool, int, bool]
"""A ``Policy`` as plain hashable values: it crosses to the worker processes with each batch."""

_policies: dict[PolicySpec, Policy] = {}


def policy_spec(policy: Policy) -> PolicySpec:
    """``policy`` as plain values (a ``Policy`` holds mapping proxies, which do not pickle)."""
    return (
        tuple(sorted(policy.min_pow.items())),
        tuple(sorted(policy.min_update_pow.items())),
        policy.allow_anonymous,
        policy.anonymous_min_pow,
        policy.allow_ecdsa,
    )


def _policy(spec: PolicySpec) -> Policy:
    policy = _policies.get(spec)
    if policy is None:
        create, update, anonymous, anonymous_min, ecdsa = spec
        policy = Policy(
            min_pow=dict(create),
            min_update_pow=dict(update),
            allow_anonymous=anonymous,
            anonymous_min_pow=anonymous_min,
            allow_ecdsa=ecdsa,
        )
        _policies[spec] = policy
    return policy


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
            (),
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
        block_refs(entity),
        canonical.encode(entity),
        time.perf_counter() - started,
    )


#: How long :func:`warm` holds its worker, so each concurrent warm-up call lands on its own.
WARM_HOLD_SECONDS: Final = 0.2


def warm(spec: PolicySpec) -> int:
    """Get a worker process ready to judge (modules imported, policy built); its pid."""
    _policy(spec)
    time.sleep(WARM_HOLD_SECONDS)
    return os.getpid()


def judge(items: Iterable[tuple[str, bytes]], spec: PolicySpec) -> list[Outcome]:
    """The outcome of each ``(kind, raw)`` under the policy ``spec``; never raises for bad input."""
    policy = _policy(spec)
    return [_one(kind, raw, policy) for kind, raw in items]
